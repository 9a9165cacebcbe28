"""The two stores behind one storage API: a DuckDB file (one machine, the default) or a
Postgres database (many replicas). `open_database` picks by the spec's form; storage code
takes a connection of either kind and asks `is_postgres` only where the SQL must differ."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa

from storage.backend.pg_connection import PgConnection

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# the same failure, as each driver raises it
CONSTRAINT_ERRORS: tuple[type[Exception], ...] = (duckdb.ConstraintException,
                                                  psycopg.errors.IntegrityError)
VALUE_ERRORS: tuple[type[Exception], ...] = (duckdb.ConversionException,
                                             duckdb.InvalidInputException,
                                             psycopg.errors.DataError)
DATABASE_ERRORS: tuple[type[Exception], ...] = (duckdb.Error, psycopg.Error)


def upsert_sql(table: str, columns: tuple[str, ...], key: str) -> str:
    """INSERT one row, or replace the row with the same `key` (both databases' syntax)."""
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (f"INSERT INTO {table} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets}")


def is_postgres_url(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(POSTGRES_SCHEMES)


def is_postgres(con: Any) -> bool:
    return isinstance(con, PgConnection)


@contextlib.contextmanager
def staged(con: Any, name: str, table: pa.Table, like: str | None = None) -> Iterator[None]:
    """Make an Arrow table queryable as `name` while the block runs (DuckDB: a registered
    view, no copy; Postgres: a temporary table filled with COPY, typed like table `like`)."""
    if isinstance(con, PgConnection):
        con.stage(name, table, like)
        try:
            yield
        finally:
            if not con.raw.closed and con.raw.info.transaction_status != \
                    psycopg.pq.TransactionStatus.INERROR:
                con.unstage(name)
        return
    con.register(name, table)
    try:
        yield
    finally:
        with contextlib.suppress(duckdb.Error):  # fails in an aborted transaction; harmless
            con.unregister(name)
