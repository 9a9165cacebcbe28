"""A Postgres connection that storage code uses the way it uses a DuckDB connection.

Storage functions are written once, in the SQL both databases speak, and take a connection.
This adapter gives a psycopg connection the small part of DuckDB's connection API they use:
`execute` (returning itself) with `?` parameters, `fetchall`/`fetchone`/`fetchmany`,
`executemany`, `description`, and explicit `BEGIN`/`COMMIT`/`ROLLBACK`, which nest as
savepoints (a write already runs in a transaction: see `storage.backend.pg_database`).
The differences that remain are named in `storage.backend.dialect`.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import pyarrow as pa

from storage.backend.pg_copy import text_for_copy
from storage.backend.pg_copy_binary import HEADER, TRAILER, BinaryCopy

_TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)(\s+TRANSACTION)?\s*;?\s*$", re.I)
_DDL_DOUBLE = re.compile(r"\bDOUBLE\b(?!\s+PRECISION)", re.I)
_DDL_UTINYINT = re.compile(r"\bUTINYINT\b", re.I)


@functools.lru_cache(maxsize=4096)
def to_pyformat(sql: str) -> str:
    """`?` placeholders become `%s` and a literal `%` becomes `%%`, outside quoted strings,
    quoted names and comments (psycopg's parameter syntax)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote inside
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i:end + 1].replace("%", "%%"))
            i = end + 1
            continue
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
            continue
        if ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def ddl_for_postgres(sql: str) -> str:
    """DuckDB type names the migrations use that Postgres spells differently."""
    return _DDL_UTINYINT.sub("SMALLINT", _DDL_DOUBLE.sub("DOUBLE PRECISION", sql))


_ARROW_TO_PG: tuple[tuple[Any, str], ...] = (
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_int8, "SMALLINT"),
    (pa.types.is_uint8, "SMALLINT"),
    (pa.types.is_int16, "SMALLINT"),
    (pa.types.is_int32, "INTEGER"),
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_floating, "DOUBLE PRECISION"),
    (pa.types.is_timestamp, "TIMESTAMPTZ"),
)


CopyInput = memoryview | BinaryCopy | None
"""Rows made into COPY input beforehand: COPY's text format (storage.backend.pg_copy), its
binary format (storage.backend.pg_copy_binary), or None (made by `copy_rows`)."""

_SERVER = " server"  # the entry of the column-type cache that holds server facts (not a table)
_COMPRESSED = frozenset({"text", "json", "jsonb"})  # types whose long values are compressed


def pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pg_type(arrow_type.value_type) + "[]"
    for test, name in _ARROW_TO_PG:
        if test(arrow_type):
            return name
    return "TEXT"


class PgConnection:
    """One psycopg connection (autocommit: transactions are explicit) seen through the DuckDB
    connection API that storage code uses."""

    dialect = "postgres"

    def __init__(self, raw: psycopg.Connection[Any], *, ddl: bool = False,
                 column_types: dict[str, dict[str, str]] | None = None):
        self.raw = raw
        self._cursor: psycopg.Cursor[Any] = raw.cursor()
        self._depth = 0
        self._lz4_depth: int | None = None  # the savepoint depth lz4 was SET LOCAL at
        self.ddl = ddl
        self._column_types = {} if column_types is None else column_types
        self._deadline: float | None = None  # time.monotonic() of statement_deadline
        self._timeout_set = False

    # -- statements ------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgConnection:
        control = _TRANSACTION.match(sql)
        if control is not None and not params:
            self._transaction(control.group(1).upper())
            return self
        if self.ddl:
            sql = ddl_for_postgres(sql)
        if self._deadline is not None:
            self._limit_to_deadline(self._deadline)
        if params:
            self._cursor.execute(to_pyformat(sql).encode(), list(params))
        else:  # without parameters psycopg sends the text as it is
            self._cursor.execute(sql.encode())
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgConnection:
        self._cursor.executemany(to_pyformat(sql).encode(), [list(row) for row in rows])
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return self._cursor.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:
            return None
        return self._cursor.fetchone()

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return self._cursor.fetchmany(size)

    @property
    def description(self) -> list[tuple[Any, ...]] | None:
        desc = self._cursor.description
        return None if desc is None else [tuple(column) for column in desc]

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def close(self) -> None:
        self._cursor.close()

    @contextlib.contextmanager
    def statement_deadline(self, deadline: float) -> Iterator[None]:
        """Each statement run meanwhile under a statement_timeout of what is left until
        `deadline` (a time.monotonic()), none past it (QueryCanceled without a round trip);
        the connection is left without a timeout (it goes back to a pool)."""
        self._deadline = deadline
        try:
            yield
        finally:
            self._deadline = None
            if self._timeout_set:
                self._timeout_set = False
                # in a transaction a cancel aborted, the RESET fails and the rollback undoes
                # the SET made in it
                with contextlib.suppress(psycopg.Error):
                    self._cursor.execute(b"RESET statement_timeout")

    def _limit_to_deadline(self, deadline: float) -> None:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise psycopg.errors.QueryCanceled("the time budget was spent before this statement")
        self._cursor.execute(f"SET statement_timeout = {left_ms}".encode())
        self._timeout_set = True

    def cancel(self) -> None:
        """Stop the statement running on this connection (from another thread)."""
        with contextlib.suppress(psycopg.Error):
            self.raw.cancel_safe(timeout=2.0)

    def stream_column(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        """The first column of a query's rows, `size` at a time, from a server-side cursor
        (one transaction, one snapshot, held until the pages run out or the connection is
        closed)."""
        self.execute("BEGIN")
        with self.raw.cursor(name=f"tl_stream_{id(self):x}") as cursor:
            cursor.execute(to_pyformat(sql).encode(), list(params))
            while rows := cursor.fetchmany(size):
                yield [row[0] for row in rows]
        self.execute("COMMIT")

    # -- transactions ----------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def _transaction(self, verb: str) -> None:
        if verb == "BEGIN":
            self._cursor.execute(b"BEGIN" if self._depth == 0
                                 else f"SAVEPOINT tl_{self._depth}".encode())
            self._depth += 1
            return
        if self._depth == 0:
            raise psycopg.ProgrammingError(f"{verb} with no transaction open")
        if self._lz4_depth is not None:  # a SET LOCAL ends with its transaction, is undone
            # by the rollback of its savepoint, and is kept by its release
            undone = self._depth == 1 or (verb == "ROLLBACK" and self._lz4_depth >= self._depth)
            self._lz4_depth = None if undone else min(self._lz4_depth, self._depth - 1)
        self._depth -= 1
        if self._depth == 0:
            self._cursor.execute(verb.encode())
        elif verb == "COMMIT":
            self._cursor.execute(f"RELEASE SAVEPOINT tl_{self._depth}".encode())
        else:
            self._cursor.execute(f"ROLLBACK TO SAVEPOINT tl_{self._depth}".encode())
            self._cursor.execute(f"RELEASE SAVEPOINT tl_{self._depth}".encode())

    # -- Arrow batches: COPY into a temporary table ---------------------------------------
    def stage(self, name: str, table: pa.Table, like: str | None = None) -> None:
        """Make `table` queryable as `name` for this connection, like DuckDB's `register`:
        a temporary table filled with COPY. Columns take the types of the same-named columns
        of table `like` (so text lands in JSON columns), others a type from Arrow's."""
        known = self._types_of(like) if like else {}
        lz4 = " COMPRESSION lz4" if self._has_lz4() else ""
        columns = ", ".join(
            f'"{field.name}" {kind}{lz4 if kind.lower() in _COMPRESSED else ""}'
            for field in table.schema
            for kind in [known.get(field.name) or pg_type(field.type)]
        )
        self._cursor.execute(f'DROP TABLE IF EXISTS "{name}"'.encode())
        self._cursor.execute(f'CREATE TEMPORARY TABLE "{name}" ({columns})'.encode())
        self.copy_rows(name, table)

    def copy_rows(self, name: str, table: pa.Table, data: CopyInput = None) -> int:
        """COPY the rows of `table` into table `name` (its columns by name); the row count.
        `data`: its COPY input when made beforehand (binary input whose column types the
        table doesn't have is made again, as text). Inside a transaction, long text is
        compressed with lz4 where the server has it (SET LOCAL once per transaction)."""
        if table.num_rows == 0:
            return 0
        if self.in_transaction and self._lz4_depth is None and self._has_lz4():
            self._cursor.execute(b"SET LOCAL default_toast_compression = 'lz4'")
            self._lz4_depth = self._depth
        names = ", ".join(f'"{field}"' for field in table.schema.names)
        if isinstance(data, BinaryCopy):
            if self._binary_fits(name, data):
                with self._cursor.copy(
                        f'COPY "{name}" ({names}) FROM STDIN (FORMAT binary)'.encode()) as copy:
                    copy.write(HEADER)
                    copy.write(data.rows)
                    copy.write(TRAILER)
                return self._cursor.rowcount
            data = None
        if data is None:
            data = text_for_copy(table)
        if data is None:  # a type the text path doesn't write: row by row
            values = [column.to_pylist() for column in table.columns]
            with self._cursor.copy(f'COPY "{name}" ({names}) FROM STDIN'.encode()) as copy:
                for row in zip(*values, strict=True):
                    copy.write_row(row)
        else:
            with self._cursor.copy(f'COPY "{name}" ({names}) FROM STDIN'.encode()) as copy:
                copy.write(data)
        return self._cursor.rowcount

    def _binary_fits(self, name: str, data: BinaryCopy) -> bool:
        """Whether table `name` has the column types `data` was written for (looked up again
        once when not: the cache may predate a migration)."""
        if data.fits(self._types_of(name)):
            return True
        self._column_types.pop(name, None)
        return data.fits(self._types_of(name))

    def unstage(self, name: str) -> None:
        self._cursor.execute(f'DROP TABLE IF EXISTS "{name}"'.encode())

    def _has_lz4(self) -> bool:
        """Whether the server compresses with lz4 (Postgres 14+ built with it): long text
        staged for ingest is compressed once, at COPY, and lz4 does it at twice pglz's speed;
        the compressed values move into the target table as they are."""
        settings = self._column_types.get(_SERVER)
        if settings is None:
            row = self._cursor.execute(
                b"SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                b"WHERE name = 'default_toast_compression'").fetchone()
            settings = {"lz4": "yes" if row and row[0] else "no"}
            self._column_types[_SERVER] = settings
        return settings["lz4"] == "yes"

    def _types_of(self, table: str) -> dict[str, str]:
        types = self._column_types.get(table)
        if types is None:
            rows = self._cursor.execute(
                b"SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                b"WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                [table],
            ).fetchall()
            types = {str(column): str(kind) for column, kind in rows}
            self._column_types[table] = types
        return types
