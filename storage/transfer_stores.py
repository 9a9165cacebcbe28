"""Opening the two ends of a store transfer (`tuneloop migrate-store`).

The source is a tuneloop store that must not be written: a DuckDB file is opened read-only
(which DuckDB refuses while a server holds the file: stop it first), after its schema is
brought up to date if it is behind (the only write, the one `tuneloop serve` would make). The
destination is opened read-write and migrated. Both are at the latest schema afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg

from storage.backend import is_postgres_url
from storage.backend.dialect import table_exists
from storage.backend.pg_database import TRANSFER_LOCK, PgDatabase, redact_url
from storage.db import Connection, Database
from storage.migrations import MIGRATIONS
from storage.store import Store, migrate_store, open_store
from tuneloop.errors import BadRequest, StorageError

T = TypeVar("T")


def label(spec: str) -> str:
    """How a store is named in messages and in the transfer record (no password)."""
    return redact_url(spec) if is_postgres_url(spec) else str(Path(spec).resolve())


def _same_store(a: str, b: str) -> bool:
    if is_postgres_url(a) != is_postgres_url(b):
        return False
    if not is_postgres_url(a):
        return Path(a).resolve() == Path(b).resolve()
    try:
        ia, ib = (psycopg.conninfo.conninfo_to_dict(x) for x in (a, b))
    except psycopg.ProgrammingError:
        return False
    fields = ("host", "port", "dbname")
    return all(str(ia.get(f, "")) == str(ib.get(f, "")) for f in fields)


def _probe(url: str) -> None:
    """Connect once, to fail at once with the server's reason (a pool only times out)."""
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot connect to {redact_url(url)}: {reason}") from exc


def _is_tuneloop_store(con: Connection) -> bool:
    return table_exists(con, "_migrations")


def _behind(con: Connection) -> bool:
    applied = {int(r[0]) for r in con.execute("SELECT version FROM _migrations").fetchall()}
    return any(m.version not in applied for m in MIGRATIONS)


def open_source(spec: str) -> Store:
    if is_postgres_url(spec):
        _probe(spec)
        db: Store = open_store(spec)
        if not db.read_sync(_is_tuneloop_store):
            db.close()
            raise BadRequest(f"{redact_url(spec)} holds no tuneloop store (no _migrations "
                             "table): nothing to copy")
        migrate_store(db)
        return db
    path = Path(spec)
    if not path.is_file():
        raise BadRequest(f"no DuckDB store at {path}: give an existing file or a "
                         "postgresql:// URL as --from")
    db = Database(path, read_only=True)
    try:
        if not db.read_sync(_is_tuneloop_store):
            raise BadRequest(f"{path} is not a tuneloop store (no _migrations table)")
        behind = db.read_sync(_behind)
    except BaseException:
        db.close()
        raise
    if behind:  # the schema only, as `tuneloop serve` would do at start
        db.close()
        writable = Database(path)
        try:
            migrate_store(writable)
        finally:
            writable.close()
        db = Database(path, read_only=True)
    return db


def open_dest(spec: str) -> Store:
    if is_postgres_url(spec):
        _probe(spec)
    elif Path(spec).is_dir():
        raise BadRequest(f"{spec} is a directory: give a DuckDB file path as --to")
    db = open_store(spec)
    try:
        migrate_store(db)
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def transfer_stores(source: str, dest: str) -> Iterator[tuple[Store, Store]]:
    """Both stores, open and migrated; closed when the block ends."""
    if _same_store(source, dest):
        raise BadRequest(f"--from and --to name the same store ({label(source)})")
    src = open_source(source)
    try:
        dst = open_dest(dest)
        try:
            yield src, dst
        finally:
            dst.close()
    finally:
        src.close()


def exclusively(dest: Store, fn: Callable[[], T]) -> T:
    """Run fn while no other migrate-store copies into `dest` (Postgres: a session advisory
    lock, waited for; DuckDB: the file is already this process's alone)."""
    if isinstance(dest, PgDatabase):
        return dest.run_with_session_lock(TRANSFER_LOCK, lambda _con: fn())
    return fn()
