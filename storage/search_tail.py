"""Which of the interactions not yet indexed (`search_pending`) are read whole: bounded by
rows AND by bytes.

Search tokenizes the newest unindexed rows at query time (storage.search), and the background
indexer reads the oldest in batches (storage.search_queue). Both read those rows whole into the
server process: bounded by rows only, 500 rows of 8 MB made every search read 4 GB (review
r12x3 HIGH 1). So the ids and sizes are read first, then only the rows that fit a budget of
bytes. A row's size (its stored request's and response's text, in bytes) is listed with it at
ingest (`text_bytes`, migration 53): sizing reads `search_pending` alone, never a value.
Counting it from the values in the database instead detoasted and decompressed each of them on
Postgres (json has no binary cast to text): 30 rows of 24 MB in the newest 500 made that count
outrun search's 2 s budget, and every search was refused (review r12x4 HIGH); `pg_column_size`,
which reads no value, is the compressed size and would let a compressible row through at many
times its budget.

- the search tail (`tail_rows`): of the newest TAIL_ROWS rows of at most TAIL_ROW_BYTES each,
  newest first, each that still fits in TAIL_BYTES (a row that does not is skipped, and the
  smaller older ones still taken: a key holder's big rows can't push everyone's new rows out
  of search); the rows left out are found once indexed, like those beyond the newest
  TAIL_ROWS (`tail_missed` counts them for /healthz). Every search tokenizes the tail in this
  process before it can answer, and text of many distinct words tokenizes at ~1.2 s a MB on
  this 2-core machine at load 11: with 8 MB a key holder's unindexed wide rows made every
  search outrun its 2 s budget (review r12y HIGH 1). So the tail is 512 KB, and a row over 64 KB (an
  ordinary chat row is a few KB; long RAG contexts are found once indexed, seconds later) takes
  no place among the TAIL_ROWS, so a flood of wide rows can't push small ones out of it; and
  one client key's rows (`search_pending.client_key`) take at most TAIL_KEY_SHARE of the
  bytes, so rows just under 64 KB from one key can't fill it either (review r12z MED 2);
- an indexer batch (`batch_ids`): at most `max_rows` rows and about `max_bytes` bytes, always
  at least one row (a row bigger than the budget is a batch of its own).

A row listed without a size (before migration 53, or by a replica of an older version during a
rolling deploy) is left out of the tail: search never reads a value to size a row, and the row
is found once indexed (`tail_missed` counts it meanwhile). The indexer measures such rows from
their values, one at a time and at most MEASURED_ROWS a batch, and stops measuring once the
batch is full: each is measured at most twice (the one that overflows a batch again for the
next), where every batch (and its read-ahead) once counted the size of all its listed rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from storage.backend.dialect import table_exists
from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.search_index import BATCH_COLUMNS, PENDING, pending_rows

TAIL_ROWS = 500  # the newest interactions not yet indexed, matched at query time
TAIL_BYTES = 512 * 1024  # of their stored request and response, at most
TAIL_ROW_BYTES = 64 * 1024  # a row bigger than this is left to the indexer
TAIL_KEY_SHARE = 0.25  # of TAIL_BYTES, the most one client key's rows take
BATCH_BYTES = 16 * 1024 * 1024  # an indexer batch's request and response, about
MEASURED_ROWS = 64  # of a batch, the rows listed without a size measured (one at a time), most


@dataclass(frozen=True)
class TailLimits:
    """The bounds of search's unindexed tail (production's by default; a test's smaller).
    `on_rows_read`: a test's hook, called with the bytes of each set of tail rows read whole."""
    rows: int = TAIL_ROWS
    bytes: int = TAIL_BYTES
    row_bytes: int = TAIL_ROW_BYTES
    key_share: float = TAIL_KEY_SHARE
    on_rows_read: Callable[[int], None] | None = field(default=None, compare=False)


DEFAULT_TAIL = TailLimits()


def measured_size(con: Connection, interaction_id: str) -> int:
    """The size of one interaction's stored request + response, counted from its values in
    the database (on Postgres each is detoasted there): for a row listed without a size only,
    by the indexer. 0 when the interaction is gone."""
    if isinstance(con, PgConnection):  # the text's size, not the compressed one stored
        size = ("coalesce(octet_length(request::text), 0) + "
                "coalesce(octet_length(response::text), 0)")
    else:
        size = ("coalesce(strlen(CAST(request AS VARCHAR)), 0) + "
                "coalesce(strlen(CAST(response AS VARCHAR)), 0)")
    rows = con.execute(f"SELECT {size} FROM interactions WHERE id = ?",
                       [interaction_id]).fetchall()
    return int(rows[0][0] or 0) if rows else 0


def tail_sizes(con: Connection, limits: TailLimits) -> list[tuple[str, int, str]]:
    """Ids, sizes (as listed at ingest) and client keys ('' for none: migration 55) of the
    newest `limits.rows` pending rows of at most `limits.row_bytes`, newest first."""
    if not table_exists(con, PENDING):
        return []
    rows = con.execute(
        f"SELECT interaction_id, text_bytes, coalesce(client_key, '') FROM {PENDING} "
        "WHERE text_bytes <= ? ORDER BY interaction_id DESC LIMIT ?",
        [limits.row_bytes, limits.rows]).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def tail_ids(sizes: list[tuple[str, int, str]], limits: TailLimits) -> list[str]:
    """Of `sizes` (newest first), the ids read for the tail: each that still fits in
    `limits.bytes` with those taken before it, and its key's rows in `limits.key_share` of
    that (one that does not is skipped). Without the share, one key's rows just under
    `row_bytes` of distinct words filled the tail that every search tokenizes: searches took
    seconds, and other keys' new rows were left out of it until indexed (review r12z MED 2)."""
    key_bytes = limits.bytes * limits.key_share
    taken: list[str] = []
    total = 0
    by_key: dict[str, int] = {}
    for item, size, key in sizes:
        if total + size > limits.bytes or by_key.get(key, 0) + size > key_bytes:
            continue
        taken.append(item)
        total += size
        by_key[key] = by_key.get(key, 0) + size
    return taken


def batch_ids(sizes: list[tuple[str, int]], max_bytes: int) -> list[str]:
    """Of `sizes` (oldest first), the first ids whose sizes add up to at most `max_bytes`,
    at least one."""
    taken: list[str] = []
    total = 0
    for item, size in sizes:
        if taken and total + size > max_bytes:
            break
        taken.append(item)
        total += size
    return taken


def sized(con: Connection, listed: list[tuple[str, int | None]], max_bytes: int,
          max_measured: int = MEASURED_ROWS) -> list[tuple[str, int]]:
    """`listed` (oldest first) with a size each, as far as a batch of `max_bytes` may take
    them: a row listed without one measured (`measured_size`), at most `max_measured`, and
    none once the rows before it fill the batch."""
    known: list[tuple[str, int]] = []
    total = measured = 0
    for item, size in listed:
        if size is None:
            if measured == max_measured or (known and total >= max_bytes):
                break
            size = measured_size(con, item)
            measured += 1
        known.append((item, size))
        total += size
    return known


def read_rows(con: Connection, ids: list[str],
              sizes: list[tuple[str, int]] | list[tuple[str, int | None]],
              on_read: Callable[[int], None] | None = None) -> pa.Table:
    """The pending rows `ids` (BATCH_COLUMNS), in the order of `ids`; fewer when another
    replica indexed some meanwhile. `on_read`: told the bytes read (TailLimits)."""
    if not ids:
        return pa.table({c: pa.array([], pa.string()) for c in BATCH_COLUMNS})
    if on_read is not None:
        wanted = set(ids)
        on_read(sum(size or 0 for item, size in sizes if item in wanted))
    batch = pending_rows(con, len(ids), ids=ids)
    order = {item: n for n, item in enumerate(ids)}
    got = batch["id"].to_pylist()
    return batch.take(sorted(range(batch.num_rows), key=lambda n: order[got[n]]))


def tail_rows(con: Connection, limits: TailLimits = DEFAULT_TAIL) -> pa.Table:
    """The search tail: the newest pending rows of at most `limits.row_bytes` within
    `limits.rows` and `limits.bytes`, newest first."""
    sizes = tail_sizes(con, limits)
    return read_rows(con, tail_ids(sizes, limits), [(i, size) for i, size, _ in sizes],
                     limits.on_rows_read)


def tail_missed(con: Connection, lag_rows: int, limits: TailLimits = DEFAULT_TAIL) -> int:
    """Of `lag_rows` pending rows, how many the search tail leaves out (found once indexed)."""
    if lag_rows == 0:
        return 0
    return max(0, lag_rows - len(tail_ids(tail_sizes(con, limits), limits)))
