"""Opening the store a deployment names: a DuckDB file path or a Postgres URL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from storage.backend import is_postgres_url
from storage.backend.pg_database import MIGRATE_LOCK, PgDatabase
from storage.db import Connection, Database
from storage.migrations.runner import Migration
from storage.online_indexes import STARTUP_ROWS, build_indexes
from storage.search_vectors import MIGRATION as VECTORS_MIGRATION
from storage.search_vectors import build_vectors

Store = Database | PgDatabase


def open_store(spec: Path | str, *, read_threads: int = 3, wait_s: float = 5.0,
               tcp_timeout_s: float | None = None) -> Store:
    """`wait_s`: with Postgres, how long a call waits for a pooled connection before it is
    refused as storage_unavailable (503); `tcp_timeout_s`: within about how long a pooled
    connection the network lost is dropped (TCP keepalives, PgDatabase)."""
    if is_postgres_url(spec):
        return PgDatabase(str(spec), read_threads=read_threads, wait_s=wait_s,
                          tcp_timeout_s=tcp_timeout_s)
    return Database(Path(spec), read_threads=read_threads)


def migrate_store(db: Store, *, up_to: int | None = None,
                  startup_rows: int = STARTUP_ROWS,
                  migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply the migrations not yet applied. On Postgres one replica migrates under an
    advisory lock while the others starting with it wait, then find nothing left to do; the
    indexes left to build concurrently are built now when their tables hold up to
    `startup_rows` rows (storage.online_indexes), else by the leading replica's indexer.
    `migrations`: as `storage.migrations.migrate`'s (None: all of them)."""
    from storage.migrations import migrate

    if isinstance(db, PgDatabase):
        done = db.run_with_session_lock(
            MIGRATE_LOCK, lambda con: migrate(con, up_to=up_to, migrations=migrations))
        # after the lock: CREATE INDEX CONCURRENTLY waits for every transaction, those of
        # replicas waiting for the migration lock too (a deadlock under it)
        if up_to is None or up_to >= VECTORS_MIGRATION:
            db.read_sync(_finish_small_vectors)
        # a new store's indexes now (its schema whole); a big table's, by the search indexer
        db.read_sync(lambda con: build_indexes(con, small_only=True,
                                              startup_rows=startup_rows))
        return done
    return db.write_sync(lambda con: migrate(con, up_to=up_to, migrations=migrations))


STARTUP_VECTOR_CHUNKS = 5  # a store this small gets its search vectors at startup


def _finish_small_vectors(con: Connection) -> None:
    """Finish migration 51 here when the store is small (a new one): a larger one is finished
    by the search indexer, in batches (storage.search_vectors)."""
    build_vectors(con, max_chunks=STARTUP_VECTOR_CHUNKS)
