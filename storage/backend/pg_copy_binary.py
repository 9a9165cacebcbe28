"""Arrow batches as COPY input for Postgres in COPY's binary format, built column-wise in Arrow.

In the binary format the server reads each value by its length (a 4-byte big-endian count,
-1 for NULL) instead of scanning every byte of every line for tabs, newlines and backslashes
as it does in the text format: COPY of a batch of chat rows (2-4 KB of JSON each) takes about
a fifth less of the server's CPU (bench/pg_ingest.py), the resource ingest is bound by.

Each row is a 16-bit column count, then each value: text as its UTF-8 bytes (JSON columns take
the same: the server's `json_recv` checks it as `json_in` does), integers and floats
big-endian, booleans one byte, timestamps microseconds since 2000-01-01 UTC, text arrays as
Postgres' array structure (dimensions, element type, each element length-prefixed). Only
those kinds are written here; the encoding names the Postgres type each column assumes
(`BinaryCopy.fits`), so a table whose column has another type takes the text format instead
(storage.backend.pg_copy). A text Postgres can't hold (a NUL character) fails the COPY with a
DataError, as in the text format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags (no OIDs), no extension
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"  # a value's length -1
_EPOCH_2000_US = 946_684_800_000_000  # Postgres timestamps count from 2000-01-01 UTC
_VARCHAR_OID = 1043  # an array's element type, checked by the server's array_recv

# kind -> (Arrow type it is written from, numpy big-endian type, Postgres types it fits)
_FIXED: dict[str, tuple[pa.DataType, str, tuple[str, ...]]] = {
    "int2": (pa.int16(), ">i2", ("smallint",)),
    "int4": (pa.int32(), ">i4", ("integer",)),
    "int8": (pa.int64(), ">i8", ("bigint",)),
    "float8": (pa.float64(), ">f8", ("double precision",)),
    "bool": (pa.uint8(), "u1", ("boolean",)),
    "timestamptz": (pa.int64(), ">i8", ("timestamp with time zone",)),
}
_INTEGERS = {pa.int16(): "int2", pa.int32(): "int4", pa.int64(): "int8"}


@dataclass(frozen=True)
class BinaryCopy:
    """A batch's rows in COPY's binary format (without the header and trailer, `HEADER` and
    `TRAILER`), and the kind of value each column was written as."""
    columns: tuple[tuple[str, str], ...]
    rows: memoryview

    def fits(self, types: Mapping[str, str]) -> bool:
        """Whether a table with these column types (`format_type` names) takes these rows."""
        return all(name in types and _fits(kind, types[name]) for name, kind in self.columns)


def _fits(kind: str, pg_type: str) -> bool:
    if kind == "text":  # the server reads text, varchar and json values as the same bytes
        return pg_type in ("text", "json") or (pg_type.startswith("character varying")
                                               and not pg_type.endswith("]"))
    if kind == "varchar[]":
        return pg_type == "character varying[]"
    return pg_type in _FIXED[kind][2]


def _kind(kind: pa.DataType) -> str | None:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if kind in _INTEGERS:
        return _INTEGERS[kind]
    if pa.types.is_floating(kind):
        return "float8"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms", "us"):
        return "timestamptz"
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
            pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
        return "varchar[]"
    return None


def _as_binary(fixed: np.ndarray, width: int) -> pa.Array:
    """Records of `width` bytes each (a numpy structured array) as an Arrow binary array."""
    buffer = pa.py_buffer(fixed.tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(fixed),
                                                [None, buffer]).cast(pa.binary())


def _numbers(values: pa.Array, kind: str) -> pa.Array:
    arrow_type, numpy_type, _ = _FIXED[kind]
    if kind == "timestamptz":
        micros = pc.cast(pc.cast(values, pa.timestamp("us", tz="UTC")), pa.int64())
        values = pc.subtract(micros, pa.scalar(_EPOCH_2000_US, pa.int64()))
    else:
        values = pc.cast(values, arrow_type)
    width = np.dtype(numpy_type).itemsize
    records = np.empty(len(values), dtype=[("length", ">i4"), ("value", numpy_type)])
    records["length"] = width
    records["value"] = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
    written = _as_binary(records, 4 + width)
    if values.null_count:
        written = pc.if_else(values.is_null(), pa.scalar(_NULL, pa.binary()), written)
    return written


def _lengths(values: pa.Array) -> pa.Array:
    """Each value's length prefix (-1 for NULL), as 4-byte binary values."""
    lengths = pc.fill_null(pc.binary_length(values), -1).to_numpy(zero_copy_only=False)
    return _as_binary(lengths.astype(">i4"), 4)


def _texts(values: pa.Array) -> list[pa.Array]:
    """A text column as its length prefixes and its bytes (two parts of each row)."""
    values = pc.cast(values, pa.binary())
    return [_lengths(values), pc.fill_null(values, pa.scalar(b"", pa.binary()))]


def _text_arrays(lists: pa.Array) -> pa.Array:
    """A list-of-text column as Postgres arrays of varchar (a NULL list is NULL; an empty
    list has no dimension)."""
    counts = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists)
    lengths, data = _texts(values)
    items = pc.binary_join_element_wise(lengths, data, pa.scalar(b"", pa.binary()))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    elements = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), items),
                              pa.scalar(b"", pa.binary()))
    null_items = np.concatenate([[0], np.cumsum(
        values.is_null().to_numpy(zero_copy_only=False).astype(np.int64))])
    has_null = null_items[offsets[1:]] > null_items[offsets[:-1]]
    present = counts > 0
    header = np.empty(len(lists), dtype=[(name, ">i4") for name in (
        "length", "dimensions", "has_null", "element_type", "count", "lower_bound")])
    header["length"] = np.where(present, 20, 12) + pc.binary_length(elements).to_numpy(
        zero_copy_only=False)
    header["dimensions"] = present
    header["has_null"] = has_null
    header["element_type"] = _VARCHAR_OID
    header["count"] = counts
    header["lower_bound"] = 1
    full = _as_binary(header, 24)
    heads = pc.if_else(pa.array(present), full, pc.binary_slice(full, 0, 16))
    written = pc.binary_join_element_wise(heads, elements, pa.scalar(b"", pa.binary()))
    if lists.null_count:
        written = pc.if_else(lists.is_null(), pa.scalar(_NULL, pa.binary()), written)
    return written


def binary_for_copy(table: pa.Table) -> BinaryCopy | None:
    """The rows in COPY's binary format, or None when a column has a type not written here
    (the caller then takes the text format)."""
    columns: list[tuple[str, str]] = []
    parts: list[pa.Array | pa.Scalar] = [pa.scalar(len(table.columns).to_bytes(2, "big"),
                                                   pa.binary())]
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = _kind(field.type)
        if kind is None:
            return None
        values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        columns.append((field.name, kind))
        if kind == "text":
            parts += _texts(values)
        elif kind == "varchar[]":
            parts.append(_text_arrays(values))
        else:
            parts.append(_numbers(values, kind))
    if table.num_rows == 0:
        return BinaryCopy(tuple(columns), memoryview(b""))
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
    return BinaryCopy(tuple(columns), _data_span(rows))


def _data_span(values: pa.Array) -> memoryview:
    """The bytes of a binary array without NULLs, one value after the other (not copied)."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1,
                            offset=values.offset * 4)
    data = values.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    return memoryview(b"" if data is None else data.slice(first, last - first))
