"""Arrow batches as COPY input for Postgres, in COPY's text format, built column-wise in Arrow.

`COPY ... FROM STDIN` (text format) takes one line per row, columns separated by a tab, NULL
written `\\N`, and in a value a backslash, tab, newline or carriage return written `\\\\`,
`\\t`, `\\n`, `\\r`. Timestamps are written `2026-11-30 00:00:00.000000Z`, booleans
`true`/`false`, numbers as Arrow casts them to text. List columns become Postgres array
literals first (`{"a","b\\"c"}`, `{1,2}`), then are escaped like any text. No Python object
per value: a batch of 2,000 chat rows is written in milliseconds where `write_row` took a
second.

The text format, not CSV: a chat row's JSON is full of `"`, which CSV doubles and the server
must undo, and JSON text never holds a raw tab or newline, so its only escape is the (rarer)
backslash; the server's parse of a batch takes about a tenth less CPU (bench/pg_ingest.py).
A text Postgres can't hold (a NUL character) makes the COPY fail with a DataError.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_NULL = "\\N"
_CONTROL = (("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _scalar_ok(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind))


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _array_literals(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A list column as Postgres array literals (text); a NULL list stays NULL, a NULL
    element is written NULL, string elements are quoted with `"` and `\\` escaped."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(lists), 0)
    offsets = pa.concat_arrays([pa.array([0], pa.int32()),
                                pc.cumulative_sum(pc.cast(lengths, pa.int32()))])
    values = pc.list_flatten(lists)
    if _is_text(values.type):
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        items = pc.binary_join_element_wise('"', escaped, '"', "")
    else:
        items = pc.cast(values, pa.string())
    items = pc.fill_null(items, "NULL")
    rebuilt = pa.ListArray.from_arrays(offsets, items, mask=lists.is_null())
    return pc.binary_join_element_wise("{", pc.binary_join(rebuilt, ","), "}", "")


def _escaped(text: pa.Array) -> pa.Array:
    """Text escaped for COPY's text format: a pass over the values only for a character the
    column holds (looked for in its data buffer with `bytes.find`, a memchr: JSON text never
    holds a raw tab or newline, and often no backslash)."""
    data = text.buffers()[2]
    held = b"" if data is None else data.to_pybytes()
    if b"\\" in held:
        text = pc.replace_substring(text, "\\", "\\\\")
    for raw, written in _CONTROL:
        if raw.encode() in held:
            text = pc.replace_substring(text, raw, written)
    return text


def _as_text(field: pa.Field, column: pa.ChunkedArray | pa.Array) -> pa.Array | None:
    """A column as COPY text values (NULL stays NULL), or None for a type not written here."""
    kind = field.type
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if _is_text(kind):
        return _escaped(pc.cast(column, pa.string()))
    if _scalar_ok(kind):
        return pc.cast(column, pa.string())
    if _is_list(kind) and _scalar_ok(kind.value_type) and not pa.types.is_timestamp(
            kind.value_type):
        return _escaped(_array_literals(column))
    return None


def text_for_copy(table: pa.Table) -> memoryview | None:
    """The rows in COPY's text format (every line ended by a newline), or None when a column
    has a type this path doesn't write (the caller then copies row by row)."""
    if table.num_rows == 0:
        return memoryview(b"")
    parts: list[pa.Array | str] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        text = _as_text(field, column)
        if text is None:
            return None
        parts += [text, "\t"]
    parts[-1] = "\n"
    lines = pc.binary_join_element_wise(*parts, "", null_handling="replace",
                                        null_replacement=_NULL)
    return _concatenated(lines)


def _concatenated(strings: pa.Array) -> memoryview:
    """The values of a string array without NULLs, one after the other: the span of its
    data buffer its offsets cover (not copied)."""
    offsets = pa.Array.from_buffers(pa.int32(), strings.offset + len(strings) + 1,
                                    [None, strings.buffers()[1]])
    first = offsets[strings.offset].as_py()
    last = offsets[strings.offset + len(strings)].as_py()
    data = strings.buffers()[2]
    return memoryview(b"" if data is None else data.slice(first, last - first))
