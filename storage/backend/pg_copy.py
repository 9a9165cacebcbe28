"""Arrow batches as COPY input for Postgres, written by Arrow's C++ CSV writer.

`COPY ... FROM STDIN WITH (FORMAT csv)` takes what `pyarrow.csv.write_csv` writes: strings
quoted (an empty string stays `""`), NULL as an unquoted empty field, timestamps as
`2026-11-30 00:00:00.000000Z`, booleans as `true`/`false`. List columns become Postgres array
literals first (`{"a","b\\"c"}`, `{1,2}`), computed column-wise in Arrow. No Python object per
value: a batch of 2,000 chat rows is written in milliseconds where `write_row` took a second.
A text Postgres can't hold (a NUL character) makes the COPY fail with a DataError, as before.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv


def _scalar_ok(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind))


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def _array_literals(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A list column as Postgres array literals (text); a NULL list stays NULL, a NULL
    element is written NULL, string elements are quoted with `"` and `\\` escaped."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(lists), 0)
    offsets = pa.concat_arrays([pa.array([0], pa.int32()),
                                pc.cumulative_sum(pc.cast(lengths, pa.int32()))])
    values = pc.list_flatten(lists)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        items = pc.binary_join_element_wise('"', escaped, '"', "")
    else:
        items = pc.cast(values, pa.string())
    items = pc.fill_null(items, "NULL")
    rebuilt = pa.ListArray.from_arrays(offsets, items, mask=lists.is_null())
    return pc.binary_join_element_wise("{", pc.binary_join(rebuilt, ","), "}", "")


def csv_for_copy(table: pa.Table) -> bytes | None:
    """The rows as CSV for COPY (no header), or None when a column has a type this path
    doesn't write (the caller then copies row by row)."""
    columns: list[pa.Array | pa.ChunkedArray] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if _scalar_ok(field.type):
            columns.append(column)
        elif _is_list(field.type) and _scalar_ok(field.type.value_type) \
                and not pa.types.is_timestamp(field.type.value_type):
            columns.append(_array_literals(column))
        else:
            return None
    out = io.BytesIO()
    pa_csv.write_csv(pa.table(columns, names=table.schema.names), out,
                     pa_csv.WriteOptions(include_header=False))
    return out.getvalue()
