"""Rows `migrate-store` can't copy, named (table, key, why) instead of a driver's traceback.

The copy stops at such a row (nothing is skipped, so nothing is lost silently): its batch is
not written, and the same command continues from there once the row is fixed or deleted in
the source. Rows are found three ways:

- before writing, on each Arrow batch bound for Postgres, the causes we know: a NUL character
  in text (Postgres text can't hold one; DuckDB's can) and a time outside the years 1 to 9999
  (DuckDB's `infinity` would land as a wrong year, and a later read of it fails);
- when the destination refuses a batch anyway: its rows are tried again in halves, in
  transactions rolled back, down to the first row refused, and the database's reason is given;
- when reading the source fails (Postgres `infinity` can't be read into Python): its time
  columns are searched for such a value after the rows already copied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.backend import DATABASE_ERRORS, is_postgres
from storage.db import Connection
from storage.transfer_read import TableSpec, column_list, quote
from tuneloop.errors import StorageError, TransferRowRefused

FIRST_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z, in microseconds since 1970
LAST_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
NUL_WHY = "its {column} holds a NUL character (U+0000), which Postgres text can't store"
TIME_WHY = "its {column} is outside the years 1 to 9999 (an infinity?)"
FIX = ("Nothing of its batch was written. Fix or delete that row in the source (its servers "
       "stopped), then run the same command again: the copy continues where it stopped")


@dataclass(frozen=True)
class Unwritable:
    row: int
    why: str


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean array (nulls are false), else -1."""
    found = pc.index(pc.fill_null(mask, False), True).as_py()
    return -1 if found is None else int(found)


def _first_bad(column: pa.ChunkedArray) -> tuple[int, str] | None:
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        row = _first(pc.match_substring(column, "\x00"))
        return (row, NUL_WHY) if row >= 0 else None
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
            pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
        flat = pc.list_flatten(column)
        hit = _first(pc.match_substring(flat, "\x00"))
        if hit < 0:
            return None
        return int(pc.list_parent_indices(column)[hit].as_py()), NUL_WHY
    if pa.types.is_timestamp(kind):
        if kind.unit != "us":
            column = pc.cast(column, pa.timestamp("us", tz=kind.tz), safe=False)
        micros = pc.cast(column, pa.int64())
        row = _first(pc.or_(pc.less(micros, FIRST_US), pc.greater(micros, LAST_US)))
        return (row, TIME_WHY) if row >= 0 else None
    return None


def first_unwritable(batch: pa.Table) -> Unwritable | None:
    """The first row of `batch` that Postgres would refuse or store wrongly, and why."""
    found: list[Unwritable] = []
    for name, column in zip(batch.column_names, batch.columns, strict=True):
        bad = _first_bad(column)
        if bad is not None:
            found.append(Unwritable(bad[0], bad[1].format(column=name)))
    return min(found, key=lambda u: u.row, default=None)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def row_label(spec: TableSpec, row: dict[str, Any]) -> str:
    """The row as the operator finds it again: its key (else its first columns)."""
    names = spec.key or spec.columns[:3]
    return ", ".join(f"{name}={_short(row.get(name))}" for name in names)


def reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def batch_row(batch: pa.Table, row: int) -> dict[str, Any]:
    """One row's values (a time Python can't hold, such as DuckDB's infinity, as its
    microseconds since 1970)."""
    values: dict[str, Any] = {}
    for name, column in zip(batch.column_names, batch.columns, strict=True):
        try:
            values[name] = column[row].as_py()
        except (OverflowError, ValueError):
            values[name] = pc.cast(column.slice(row, 1), pa.int64())[0].as_py()
    return values


def refused(spec: TableSpec, batch: pa.Table, row: int, why: str,
            dest_label: str) -> TransferRowRefused:
    values = batch_row(batch, row)
    return TransferRowRefused(
        f"{spec.name} row ({row_label(spec, values)}) can't be copied into {dest_label}: "
        f"{why}. {FIX}")


TryRows = Callable[[pa.Table], None]
"""Writes rows in a transaction that is rolled back; raises the database's error if refused."""


def first_refused_row(batch: pa.Table, try_rows: TryRows) -> tuple[int, BaseException] | None:
    """The first row of `batch` the destination refuses on its own (halving the batch: about
    2 log2(n) tries), with the error; None when every half is taken (the batch failed for
    another reason)."""
    low, high = 0, batch.num_rows
    while high - low > 1:
        middle = (low + high) // 2
        try:
            try_rows(batch.slice(low, middle - low))
        except DATABASE_ERRORS:
            high = middle
            continue
        low = middle
    try:
        try_rows(batch.slice(low, 1))
    except DATABASE_ERRORS as exc:
        return low, exc
    return None


def refused_batch(spec: TableSpec, batch: pa.Table, exc: BaseException, try_rows: TryRows,
                  dest_label: str) -> BaseException:
    """The error to raise for a batch the destination refused."""
    found = first_refused_row(batch, try_rows)
    if found is None:
        return StorageError(f"{dest_label} refused a batch of {spec.name} rows, though each "
                            f"of its rows alone is taken: {reason(exc)}")
    row, error = found
    return refused(spec, batch, row, reason(error), dest_label)


def unreadable(con: Connection, spec: TableSpec, done: int, exc: BaseException,
               source_label: str) -> TransferRowRefused:
    """The error for a source table whose rows after the first `done` can't be read: the row
    with a time Python can't hold (Postgres's `infinity`, years past 9999), when found."""
    where = f"after the first {done:,} rows (in the order of {column_list(spec.order)})"
    if is_postgres(con):
        for column in _time_columns(con, spec.name):
            row = con.execute(
                f"SELECT {column_list(spec.key or spec.columns)} FROM {quote(spec.name)} "
                f"WHERE NOT isfinite({quote(column)}) OR {quote(column)} < '0001-01-01Z' "
                f"OR {quote(column)} >= '10000-01-01Z' LIMIT 1").fetchone()
            if row is not None:
                values = dict(zip(spec.key or spec.columns, row, strict=True))
                return TransferRowRefused(
                    f"{spec.name} row ({row_label(spec, values)}) can't be read from "
                    f"{source_label}: {TIME_WHY.format(column=column)}. {FIX}")
    return TransferRowRefused(f"a {spec.name} row {where} can't be read from {source_label}: "
                              f"{reason(exc)}. {FIX}")


def _time_columns(con: Connection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ? AND data_type LIKE 'timestamp%' "
        "ORDER BY ordinal_position", [table]).fetchall()
    return [str(r[0]) for r in rows]
