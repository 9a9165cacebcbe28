"""Opening the store a deployment names: a DuckDB file path or a Postgres URL."""

from __future__ import annotations

from pathlib import Path

from storage.backend import is_postgres_url
from storage.backend.pg_database import MIGRATE_LOCK, PgDatabase
from storage.db import Database

Store = Database | PgDatabase


def open_store(spec: Path | str, *, read_threads: int = 3, wait_s: float = 5.0) -> Store:
    """`wait_s`: with Postgres, how long a call waits for a pooled connection before it is
    refused as storage_unavailable (503)."""
    if is_postgres_url(spec):
        return PgDatabase(str(spec), read_threads=read_threads, wait_s=wait_s)
    return Database(Path(spec), read_threads=read_threads)


def migrate_store(db: Store, *, up_to: int | None = None) -> list[int]:
    """Apply the migrations not yet applied. On Postgres one replica migrates under an
    advisory lock while the others starting with it wait, then find nothing left to do."""
    from storage.migrations import migrate

    if isinstance(db, PgDatabase):
        return db.run_with_session_lock(MIGRATE_LOCK, lambda con: migrate(con, up_to=up_to))
    return db.write_sync(lambda con: migrate(con, up_to=up_to))
