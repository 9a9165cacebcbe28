"""Inserting derived rows (reviews, revisions, tags) in one statement, whatever their number."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from storage.backend import staged
from storage.db import Connection

SMALL_WRITE = 20


def insert_rows(con: Connection, table: str, rows: list[dict[str, Any]], schema: pa.Schema,
                suffix: str = "") -> None:
    """Insert rows: a few as parameters (registering Arrow costs more than it saves there),
    many as one Arrow batch."""
    if not rows:
        return
    names = schema.names
    if len(rows) <= SMALL_WRITE:
        marks = ", ".join("?" for _ in names)
        con.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) {suffix}",
                        [[row[name] for name in names] for row in rows])
        return
    view = f"_{table}_rows"
    columns = ", ".join(names)
    with staged(con, view, pa.Table.from_pylist(rows, schema), like=table):
        con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view} {suffix}")
