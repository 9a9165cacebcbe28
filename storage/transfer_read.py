"""Reading a store's tables as Arrow batches, from either backend, and checksumming them.

`migrate-store` (storage.transfer) copies what these readers yield and then checks the copy:
each table's row count and an order-independent checksum of its rows, computed the same way
on both backends (timestamps as UTC microseconds, JSON as the text stored, arrays as lists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.types.string import TextLoader

from storage.backend import is_postgres
from storage.db import Connection

CHECKSUM_MOD = 1 << 64


@dataclass(frozen=True)
class TableSpec:
    """One table to copy: its columns in order and its primary key (empty: none)."""
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]

    @property
    def order(self) -> tuple[str, ...]:
        """A total order of the rows: the primary key, else every column (rows that are equal
        in every column are interchangeable, so the order is still well defined)."""
        return self.key or self.columns


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_list(names: Sequence[str]) -> str:
    return ", ".join(quote(n) for n in names)


def user_tables(con: Connection) -> list[str]:
    """The store's tables, without the bookkeeping ones (`_migrations`, `_store_transfer`)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        " AND table_type = 'BASE TABLE' ORDER BY table_name"
    ).fetchall()
    return [str(r[0]) for r in rows if not str(r[0]).startswith("_")]


DERIVED_COLUMNS = {"search_docs": frozenset({"lexemes"})}
"""Columns a store makes from the others (Postgres' tsvector: migration 51's trigger), never
copied: DuckDB has none, and a Postgres destination makes its own."""


def table_spec(con: Connection, table: str) -> TableSpec:
    columns = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ? ORDER BY ordinal_position", [table]
    ).fetchall()
    key = con.execute(
        "SELECT k.column_name FROM information_schema.table_constraints c "
        "JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name "
        "AND k.table_name = c.table_name AND k.table_schema = c.table_schema "
        "WHERE c.table_schema = current_schema() AND c.table_name = ? "
        "AND c.constraint_type = 'PRIMARY KEY' ORDER BY k.ordinal_position", [table]
    ).fetchall()
    derived = DERIVED_COLUMNS.get(table, frozenset())
    return TableSpec(table, tuple(str(c[0]) for c in columns if str(c[0]) not in derived),
                     tuple(str(k[0]) for k in key))


def count_rows(con: Connection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()
    return int(row[0]) if row else 0


def read_batches(con: Connection, spec: TableSpec, *, skip: int = 0, batch_rows: int,
                 ordered: bool = True, limit: int | None = None
                 ) -> Generator[pa.Table, None, None]:
    """The table's rows as Arrow tables of up to `batch_rows` rows, in `spec.order` after the
    first `skip` rows and at most `limit` of them (ordered), or in any order (ordered=False,
    for checksums). On Postgres one read-only REPEATABLE READ transaction: one snapshot for
    the whole table."""
    sql = f"SELECT {column_list(spec.columns)} FROM {quote(spec.name)}"
    if ordered:
        sql += f" ORDER BY {column_list(spec.order)}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if skip:
            sql += f" OFFSET {int(skip)}"
    if is_postgres(con):
        yield from _pg_batches(con, spec, sql, batch_rows)
        return
    assert not is_postgres(con)
    cursor = con.cursor()  # type: ignore[union-attr]  # its own: the stream outlives calls
    try:
        for batch in cursor.sql(sql).to_arrow_reader(batch_rows):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])
    finally:
        cursor.close()


def _pg_batches(con: Any, spec: TableSpec, sql: str, batch_rows: int) -> Iterator[pa.Table]:
    raw = con.raw
    with raw.transaction():
        raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with raw.cursor(name=f"tl_transfer_{spec.name}") as cursor:
            for json_type in ("json", "jsonb"):  # the text as stored, as DuckDB gives it
                cursor.adapters.register_loader(json_type, TextLoader)
            cursor.itersize = batch_rows
            cursor.execute(sql.encode())
            while rows := cursor.fetchmany(batch_rows):
                columns = list(zip(*rows, strict=True))
                yield pa.table({name: pa.array(list(values))
                                for name, values in zip(spec.columns, columns, strict=True)})


def _normalized(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    kind = column.type
    if pa.types.is_timestamp(kind):
        utc = pc.cast(column, pa.timestamp("us", tz="UTC"))
        return pc.cast(utc, pa.int64()).to_pylist()
    return column.to_pylist()


def row_digests(table: pa.Table) -> list[int]:
    """A 64-bit digest of each row, the same for the same values on either backend."""
    return [int.from_bytes(hashlib.blake2b(repr(row).encode(), digest_size=8).digest(), "big")
            for row in zip(*(_normalized(c) for c in table.columns), strict=True)]


def checksum(table: pa.Table) -> int:
    """The sum (mod 2**64) of a digest of each row: the same for the same rows in any order,
    on either backend."""
    return sum(row_digests(table)) % CHECKSUM_MOD


class BatchDigest:
    """An order-independent digest of rows as read from ONE store (DuckDB's hash of each row,
    summed mod 2**64), computed in an in-memory DuckDB on the Arrow batches: about 6x faster
    than `checksum`, but not comparable across backends (their Arrow types differ). A copy
    records it for the rows it has copied; a resume compares it with the source's rows now."""

    def __init__(self) -> None:
        self._con = duckdb.connect()

    def __call__(self, batch: pa.Table) -> int:
        if batch.num_rows == 0:
            return 0
        # a list as its text: hash() gives NULL, [] and [NULL] the same value
        values = ", ".join(
            f"CAST({quote(f.name)} AS VARCHAR)" if pa.types.is_list(f.type) else quote(f.name)
            for f in batch.schema)
        self._con.register("tl_digest", batch)
        try:
            rows = self._con.execute(
                f"SELECT sum(hash({values}))::VARCHAR FROM tl_digest").fetchall()
        finally:
            self._con.unregister("tl_digest")
        return int(rows[0][0]) % CHECKSUM_MOD if rows and rows[0][0] is not None else 0

    def close(self) -> None:
        self._con.close()


@dataclass(frozen=True)
class TableSum:
    rows: int
    checksum: int


def table_sum(con: Connection, spec: TableSpec, batch_rows: int) -> TableSum:
    rows = total = 0
    for batch in read_batches(con, spec, batch_rows=batch_rows, ordered=False):
        rows += batch.num_rows
        total = (total + checksum(batch)) % CHECKSUM_MOD
    return TableSum(rows, total)
