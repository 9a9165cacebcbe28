"""Which of the interactions not yet indexed (`search_pending`) are read whole: bounded by
rows AND by bytes.

Search tokenizes the newest unindexed rows at query time (storage.search), and the background
indexer reads the oldest in batches (storage.search_queue). Both read those rows whole into the
server process: bounded by rows only, 500 rows of 8 MB made every search read 4 GB (review
r12x3 HIGH 1). So the ids and sizes are read first (the request's and the response's text, in
bytes, counted in the database: nothing is sent or tokenized; on Postgres json has no binary
cast to text, so each value is still detoasted there, about 130 ms for 160 MB at load 3, far
less than reading it here; `pg_column_size`, which reads no value, is the compressed size and
would let a compressible row through at many times its budget), then only the rows that fit a
budget of bytes:

- the search tail (`tail_rows`): of the newest TAIL_ROWS rows, newest first, each that still
  fits in TAIL_BYTES (a row that does not is skipped, and the smaller older ones still taken:
  a key holder's big rows can't push everyone's new rows out of search); the rows left out
  are found once indexed, like those beyond the newest TAIL_ROWS (`tail_missed` counts them
  for /healthz);
- an indexer batch (`batch_ids`): at most `max_rows` rows and about `max_bytes` bytes, always
  at least one row (a row bigger than the budget is a batch of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from storage.backend.dialect import table_exists
from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.search_index import BATCH_COLUMNS, PENDING, pending_rows

TAIL_ROWS = 500  # the newest interactions not yet indexed, matched at query time
TAIL_BYTES = 8 * 1024 * 1024  # of their stored request and response, at most
BATCH_BYTES = 16 * 1024 * 1024  # an indexer batch's request and response, about
# a test's hook: called with the bytes of each set of pending rows read whole
on_rows_read: Callable[[int], None] | None = None


def pending_sizes(con: Connection, limit: int, *, newest: bool = False,
                  after: str | None = None) -> list[tuple[str, int]]:
    """Ids and sizes in bytes (stored request + response) of up to `limit` interactions not
    yet indexed, oldest first or newest; `after`: only ids after it. A listed id whose
    interaction is gone has size 0."""
    if not table_exists(con, PENDING):
        return []
    if isinstance(con, PgConnection):  # the text's size, not the compressed one stored
        size = ("coalesce(octet_length(i.request::text), 0) + "
                "coalesce(octet_length(i.response::text), 0)")
    else:
        size = ("coalesce(strlen(CAST(i.request AS VARCHAR)), 0) + "
                "coalesce(strlen(CAST(i.response AS VARCHAR)), 0)")
    params: list[Any] = []
    where = ""
    if after is not None:
        where, params = "WHERE interaction_id > ? ", [after]
    order = "DESC" if newest else "ASC"
    # the ids first: sizes counted for those `limit` only, not for every listed row
    rows = con.execute(
        f"SELECT p.interaction_id, {size} FROM (SELECT interaction_id FROM {PENDING} "
        f"{where}ORDER BY interaction_id {order} LIMIT ?) p LEFT JOIN interactions i "
        f"ON i.id = p.interaction_id ORDER BY p.interaction_id {order}",
        [*params, limit]).fetchall()
    return [(str(r[0]), int(r[1] or 0)) for r in rows]


def tail_ids(sizes: list[tuple[str, int]], max_bytes: int) -> list[str]:
    """Of `sizes` (newest first), the ids read for the tail: each that still fits in
    `max_bytes` with those taken before it (one that does not is skipped)."""
    taken: list[str] = []
    total = 0
    for item, size in sizes:
        if total + size > max_bytes:
            continue
        taken.append(item)
        total += size
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


def read_rows(con: Connection, ids: list[str],
              sizes: list[tuple[str, int]]) -> pa.Table:
    """The pending rows `ids` (BATCH_COLUMNS), in the order of `ids`; fewer when another
    replica indexed some meanwhile."""
    if not ids:
        return pa.table({c: pa.array([], pa.string()) for c in BATCH_COLUMNS})
    if on_rows_read is not None:
        wanted = set(ids)
        on_rows_read(sum(size for item, size in sizes if item in wanted))
    batch = pending_rows(con, len(ids), ids=ids)
    order = {item: n for n, item in enumerate(ids)}
    got = batch["id"].to_pylist()
    return batch.take(sorted(range(batch.num_rows), key=lambda n: order[got[n]]))


def tail_rows(con: Connection, max_rows: int | None = None,
              max_bytes: int | None = None) -> pa.Table:
    """The search tail: the newest pending rows within TAIL_ROWS and TAIL_BYTES, newest
    first."""
    sizes = pending_sizes(con, TAIL_ROWS if max_rows is None else max_rows, newest=True)
    return read_rows(con, tail_ids(sizes, TAIL_BYTES if max_bytes is None else max_bytes),
                     sizes)


def tail_missed(con: Connection, lag_rows: int) -> int:
    """Of `lag_rows` pending rows, how many the search tail leaves out (found once indexed)."""
    if lag_rows == 0:
        return 0
    sizes = pending_sizes(con, TAIL_ROWS, newest=True)
    return max(0, lag_rows - len(tail_ids(sizes, TAIL_BYTES)))


def next_batch(con: Connection, max_rows: int, max_bytes: int,
               after: str | None = None) -> tuple[pa.Table, bool]:
    """An indexer batch: the oldest pending rows (after `after`) within `max_rows` rows and
    about `max_bytes` bytes; and whether more may be listed after it."""
    sizes = pending_sizes(con, max_rows, after=after)
    ids = batch_ids(sizes, max_bytes)
    return read_rows(con, ids, sizes), len(ids) < len(sizes) or len(sizes) >= max_rows
