"""A migrated store's connection for tests that call storage functions directly, on either
backend (the `store` fixture's spec: a DuckDB path or a Postgres URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.backend import is_postgres_url
from storage.db import Connection
from storage.sql_check import HIDDEN_TABLES
from storage.store import migrate_store, open_store


@contextmanager
def connected(store: str) -> Iterator[Connection]:
    """A connection of its own (Postgres: autocommit, like a DuckDB cursor); the store is
    closed after the block."""
    db = open_store(store if is_postgres_url(store) else Path(store))
    try:
        migrate_store(db)
        connection = db.detached_cursor()
        try:
            yield connection
        finally:
            connection.close()
    finally:
        db.close()


def readable(columns: list[list[Any]]) -> list[list[Any]]:
    """Rows of information_schema (table name first) without the tables `tuneloop sql` may not
    read (`storage.sql_check.HIDDEN_TABLES`; on Postgres a query may not even name them)."""
    return [row for row in columns if row[0] not in HIDDEN_TABLES]
