"""The background search indexer: indexes what ingest listed in `search_pending`.

Ingest only lists the ids of the reviewable interactions it inserted, each with the size of
its text (storage.search_index `queue_for_index`, in the ingest transaction); tokenizing
their text, most of the ingest's time when done inline, happens here, off its critical path:

1. read the oldest listed interactions, at most `batch_rows` and about `batch_bytes` of text
   (storage.search_tail, by the sizes listed with them at ingest; a read: no write lock held),
2. compute their forward index (in the compute worker process when there is one),
3. in one write transaction, take them off the list (`DELETE ... RETURNING`) and write the
   terms of those this transaction took (`store_claimed`); a batch of wide rows in several
   such transactions, each of at most WRITE_TERMS postings and words (`write_chunks`: on
   Postgres a write holds the deployment's write lock, which ingest and admin writes wait for).

The listed rows are taken oldest first within a share per client key (storage.search_fair):
one key's wide rows are indexed a quantum at a time after the other keys' rows.

So a crash (`kill -9`) anywhere leaves an interaction listed and unindexed or indexed and
unlisted, never indexed twice; a replica racing another, or `forget`/retention deleting
rows meanwhile, only makes step 3 take fewer (nothing is written for a row it didn't take).
With replicas, the one holding the change feed's leader lock indexes (`may_run`); another
taking over goes on from the list. Search reads the unindexed tail itself (storage.search),
and `lag_rows`/`lag_seconds` are in /metrics, refreshed every LAG_REFRESH_S during a backlog
(`tail_missed_rows`: those of them search's tail leaves out, in /healthz; counted from the
sizes listed with the rows, under a statement timeout on Postgres: see `tail_missed_within`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from storage.backend.dialect import table_exists
from storage.backend.pg_connection import PgConnection
from storage.backend.pg_database import PgDatabase
from storage.db import Connection
from storage.online_indexes import build_indexes
from storage.search_fair import KEY_TERMS, KeyShares, pending_batch
from storage.search_index import (
    PENDING,
    ForwardIndex,
    SearchIndexer,
    store_claimed,
)
from storage.search_tail import BATCH_BYTES, TAIL_ROWS, tail_missed
from storage.search_vectors import build_vectors, clean_pending
from storage.store import Store

log = logging.getLogger("tuneloop.search")
IDLE_CHECK_S = 10.0  # with nothing ingested here, how often the list is looked at
LAG_REFRESH_S = 1.0  # during a backlog, how often the lag figures are measured again
# how often the rows search's tail leaves out are counted again (from the sizes listed with
# the newest 500 unindexed rows: no value is read), and how long that count may take at most
TAIL_CHECK_S = 10.0
TAIL_CHECK_TIMEOUT_S = 1.0
LAG_TIMEOUT_S = 1.0  # the lag's count (a join of the list with interactions), at most
VECTOR_CHUNKS_PER_ROUND = 10  # Postgres, finishing migration 51: rows filled a round, in chunks
# the rows (postings and words) one write transaction of the indexer stores at most, unless one
# interaction alone has more (at most 3 fields x MAX_FIELD_TERMS terms, and its words): a batch
# of wide rows is written in several. On Postgres each holds the deployment's write lock, which
# ingest and every admin write wait for (review r12x2: one transaction of 20 rows of 50,000
# new words held it 2.5-3 min). A batch of 2,000 ordinary chat rows is ~90,000 postings.
WRITE_TERMS = 50_000


@dataclass
class IndexerStats:
    indexed: int = 0
    failures: int = 0
    last_error: str | None = None
    lag_rows: int = 0
    lag_seconds: float = 0.0
    tail_missed_rows: int = 0  # of lag_rows, those search's unindexed tail leaves out
    # False while the last count of the lag outran LAG_TIMEOUT_S: /healthz and /metrics then
    # say unknown (null, NaN), the figures above are the last counted
    lag_known: bool = True


def index_lag(con: Connection) -> tuple[int, datetime | None]:
    """How many interactions wait to be indexed, and when the oldest of them was made."""
    if not table_exists(con, PENDING):
        return 0, None
    row = con.execute(f"SELECT count(*), min(i.created_at) FROM {PENDING} p "
                      "JOIN interactions i ON i.id = p.interaction_id").fetchall()[0]
    return int(row[0]), row[1]


def index_lag_within(con: Connection, timeout_s: float) -> tuple[int, datetime | None] | None:
    """`index_lag`, or None when it is not counted within `timeout_s` on Postgres (as
    `tail_missed_within`: a lock held on `search_pending`, or a backlog of millions, must not
    hold a replica's background loop)."""
    if not isinstance(con, PgConnection):
        return index_lag(con)
    try:
        with con.statement_deadline(time.monotonic() + timeout_s):
            return index_lag(con)
    except psycopg.errors.QueryCanceled:
        return None


def row_widths(forward: ForwardIndex) -> dict[str, int]:
    """The rows (postings and words) a forward index writes for each interaction."""
    widths = dict(zip(forward.docs["interaction_id"].to_pylist(),
                      pc.list_value_length(forward.docs["term_keys"]).to_pylist(), strict=True))
    for counted in pc.value_counts(forward.words["interaction_id"]).to_pylist():
        widths[counted["values"]] = widths.get(counted["values"], 0) + counted["counts"]
    return widths


def only_ids(forward: ForwardIndex, ids: Sequence[str]) -> ForwardIndex:
    taken = pa.array(list(ids), pa.string())
    return ForwardIndex(
        forward.docs.filter(pc.is_in(forward.docs["interaction_id"], value_set=taken)),
        forward.words.filter(pc.is_in(forward.words["interaction_id"], value_set=taken)))


def tail_missed_within(con: Connection, lag_rows: int, timeout_s: float) -> int | None:
    """`tail_missed`, or None when it is not counted within `timeout_s` on Postgres (a
    statement_timeout; the pooled connection is left without one): a lock held on
    `search_pending` (a migration's) must not hold a replica's background loop. On DuckDB,
    in this process, it reads the list's two narrow columns (a Top-N of ids), no value."""
    if not isinstance(con, PgConnection):
        return tail_missed(con, lag_rows)
    try:
        with con.statement_deadline(time.monotonic() + timeout_s):
            return tail_missed(con, lag_rows)
    except psycopg.errors.QueryCanceled:
        return None


def write_chunks(forward: ForwardIndex, ids: Sequence[str],
                 max_terms: int) -> list[tuple[ForwardIndex, list[str]]]:
    """`ids` (in order) and their forward index cut into runs of at most `max_terms` rows
    written (postings and words; a run holds at least one interaction, whatever its width),
    each for a transaction of its own (`store_claimed`): no write holds the write lock for
    more than one run's rows."""
    widths = row_widths(forward)
    runs: list[list[str]] = [[]]
    terms_in_run = 0
    for interaction in ids:
        width = widths.get(interaction) or 0
        if runs[-1] and terms_in_run + width > max_terms:
            runs.append([])
            terms_in_run = 0
        runs[-1].append(interaction)
        terms_in_run += width
    if len(runs) == 1:
        return [(forward, list(ids))]
    return [(only_ids(forward, run), run) for run in runs]


class BackgroundIndexer:
    def __init__(self, db: Store, indexer: SearchIndexer, *, batch_rows: int = 2000,
                 interval_s: float = 1.0, may_run: Callable[[], bool] | None = None,
                 write_terms: int = WRITE_TERMS, batch_bytes: int = BATCH_BYTES,
                 key_terms: int = KEY_TERMS,
                 tail_check_timeout_s: float = TAIL_CHECK_TIMEOUT_S,
                 lag_refresh_s: float = LAG_REFRESH_S, lag_timeout_s: float = LAG_TIMEOUT_S,
                 merge_gin: bool = True,
                 on_written: Callable[[list[str]], None] | None = None):
        """`merge_gin` False: leave the GIN's pending list to the writes that fill it (the
        behaviour before review r12y MED 3, for bench/pg_index_lock.py); `on_written`: a
        test's or bench's hook, called after each write transaction with the ids given it."""
        self.db = db
        self.lag_refresh_s = lag_refresh_s
        self.lag_timeout_s = lag_timeout_s
        self.merge_gin = merge_gin
        self.on_written = on_written
        self.tail_check_timeout_s = tail_check_timeout_s
        self.shares = KeyShares(key_terms)
        # a heavy key's rows read and tokenized, then left for its quantum (in this call)
        self._ready: dict[str, list[tuple[ForwardIndex, list[str]]]] = {}
        self.batch_bytes = batch_bytes
        self.write_terms = write_terms
        self.indexer = indexer
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.may_run = may_run or (lambda: True)
        self.stats = IndexerStats()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._paused_until = 0.0
        self._tail_checked = float("-inf")
        self.vectors_ready = not isinstance(db, PgDatabase)
        self.indexes_ready = not isinstance(db, PgDatabase)
        self._vectors_from = ""

    def pause(self, seconds: float) -> None:
        """Index nothing for `seconds` (the lag is still measured): the fault-injection
        switch (proxy/admin/faults.py), to see a lagging index in tests."""
        self._paused_until = time.monotonic() + seconds

    def wake(self, *_: object) -> None:
        """Index soon (the writer calls it after each ingest)."""
        self._wake.set()

    async def index_pending(self) -> int:
        """Index every listed interaction, in batches, sharing the work between client keys
        (storage.search_fair: the light lane, then a quantum per heavy key, again); answers
        how many this call took."""
        async with self._lock:
            total = 0
            self.shares.new_call()
            try:
                while True:
                    self.shares.new_pass()
                    done = await self._index_lane(None)
                    for key in list(self.shares.heavy):
                        self.shares.turn(key)
                        done += await self._index_lane(key)
                    total += done
                    if done == 0 or not self.shares.heavy:
                        break
            finally:
                self.shares.end_call()
                self._ready.clear()
            await self.refresh_lag()
            return total

    async def _index_lane(self, only: str | None) -> int:
        """The light lane (`only` None: the rows of keys not heavy) or a heavy key's quantum.
        In the light lane the next batch is read and its forward index computed while this one
        is written (rows listed meanwhile below it wait for the next pass or call); a heavy
        key's batches are read one after the other, each of the rows its quantum has room for
        by the width of its rows so far (none tokenized to be left)."""
        total = 0
        if only is not None:  # first its rows the light lane left
            ready = self._ready.pop(only, [])
            while ready and self.shares.may_write(only):
                forward, ids = ready.pop(0)
                total += await self._write(forward, ids, dict.fromkeys(ids, only))
            self._ready.setdefault(only, []).extend(ready)
            if not self.shares.may_write(only):
                return total
        reading: asyncio.Future[tuple[pa.Table, ForwardIndex, bool, dict[str, str]]]
        following: asyncio.Future[tuple[pa.Table, ForwardIndex, bool, dict[str, str]]] | None \
            = asyncio.ensure_future(self._read_batch(None, only))
        measured = time.monotonic()
        try:
            while following is not None:
                reading, following = following, None
                batch, forward, more, keys = await reading
                if batch.num_rows == 0:
                    break
                ids = batch["id"].to_pylist()
                if more and only is None:
                    following = asyncio.ensure_future(self._read_batch(max(ids), None))
                total += await self._write(forward, ids, keys)
                if not more or (only is not None and not self.shares.may_write(only)):
                    break
                if only is not None:
                    following = asyncio.ensure_future(self._read_batch(max(ids), only))
                if time.monotonic() - measured >= self.lag_refresh_s:  # not frozen in a backlog
                    await self.refresh_lag()
                    measured = time.monotonic()
        finally:
            if following is not None:  # a write failed, or a quantum is spent: it waits
                following.cancel()
                with contextlib.suppress(BaseException):
                    await following
        return total

    async def _write(self, forward: ForwardIndex, ids: list[str], keys: dict[str, str]) -> int:
        """Store a batch in write transactions of at most write_terms rows, leaving listed
        the rows of keys whose quantum is spent (kept ready for their next quantum)."""
        widths = row_widths(forward)
        taken = 0
        for part, part_ids in write_chunks(forward, ids, self.write_terms):
            allowed = [i for i in part_ids if self.shares.may_write(keys.get(i, ""))]
            if len(allowed) < len(part_ids):
                written = set(allowed)
                left = [i for i in part_ids if i not in written]
                for key in dict.fromkeys(keys.get(i, "") for i in left):
                    of_key = [i for i in left if keys.get(i, "") == key]
                    self._ready.setdefault(key, []).append((only_ids(part, of_key), of_key))
                if not allowed:
                    continue
                part = only_ids(part, allowed)
            claimed = await self.db.write(functools.partial(
                store_claimed, forward=part, ids=allowed))
            if self.on_written is not None:
                self.on_written(allowed)
            if claimed:
                await self._merge_pending_list()
            taken += claimed
            self.stats.indexed += claimed
            for interaction in allowed:
                self.shares.charge(keys.get(interaction, ""), widths.get(interaction, 0))
        return taken

    async def _merge_pending_list(self) -> None:
        """Postgres: merge what this write added to the GIN's pending list into the index
        now, outside the write lock (storage.search_vectors `clean_pending`), so that no
        locked write of ours, or anyone's, merges seconds' worth of it."""
        if not self.merge_gin or not isinstance(self.db, PgDatabase):
            return
        try:
            await self.db.read(clean_pending)
        except psycopg.errors.InsufficientPrivilege as exc:  # not the index's owner
            self.merge_gin = False
            log.warning("search: cannot merge the GIN's pending list (%s); a write that "
                        "fills it merges it under the write lock", exc)

    async def _read_batch(self, after: str | None, only: str | None,
                          ) -> tuple[pa.Table, ForwardIndex, bool, dict[str, str]]:
        """The next batch (at most batch_rows, about batch_bytes) of the light lane or of the
        key `only`, its forward index, whether more may be listed after it, and its keys."""
        batch, more, keys = await self.db.read(functools.partial(
            pending_batch, max_rows=self.shares.room(only, self.batch_rows),
            max_bytes=self.batch_bytes, after=after, skip=list(self.shares.heavy), only=only))
        return batch, await asyncio.to_thread(self.indexer.forward_index, batch), more, keys

    async def finish_vectors(self) -> bool:
        """Postgres: take migration 51 a round further (storage.search_vectors: the lexemes
        of older rows filled, then the GIN built concurrently); answers whether it is done."""
        if not self.vectors_ready:
            self.vectors_ready, self._vectors_from = await self.db.read(functools.partial(
                build_vectors, start=self._vectors_from, max_chunks=VECTOR_CHUNKS_PER_ROUND))
        return self.vectors_ready

    async def finish_indexes(self) -> bool:
        """Postgres: build the indexes migrations left to be built concurrently
        (storage.online_indexes); answers whether none is left."""
        if not self.indexes_ready:
            self.indexes_ready = await self.db.read(build_indexes)
        return self.indexes_ready

    async def refresh_lag(self) -> None:
        counted = await self.db.read(functools.partial(
            index_lag_within, timeout_s=self.lag_timeout_s))
        if counted is None:
            log.warning("the search index's lag was not counted within %.3g s",
                        self.lag_timeout_s)
            self.stats.lag_known = False
            return
        self.stats.lag_known = True
        rows, oldest = counted
        if rows == 0:
            self.stats.tail_missed_rows = 0
        elif time.monotonic() - self._tail_checked >= TAIL_CHECK_S \
                or self.stats.tail_missed_rows > rows:
            missed = await self.db.read(functools.partial(
                tail_missed_within, lag_rows=rows, timeout_s=self.tail_check_timeout_s))
            if missed is None:  # not counted in time: the last count, within what is sure
                log.warning("the rows search's tail leaves out were not counted within %.3g s",
                            self.tail_check_timeout_s)
                missed = min(rows, max(self.stats.tail_missed_rows, rows - TAIL_ROWS))
            self.stats.tail_missed_rows = missed
            self._tail_checked = time.monotonic()
        self.stats.lag_rows = rows
        self.stats.lag_seconds = 0.0 if oldest is None else \
            max(0.0, time.time() - oldest.timestamp())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tuneloop-search-index")

    async def _run(self) -> None:
        backoff = self.interval_s
        checked = 0.0
        # not `while True`: on Python 3.11 a cancel that lands as the wake-up fires is swallowed
        # by asyncio.wait_for (gh-86296), and close() would then wait for this task forever
        while not self._closing:
            woken = False
            with contextlib.suppress(TimeoutError):
                woken = await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            idle = not woken and self.stats.lag_rows == 0 and self.stats.last_error is None \
                and self.vectors_ready and self.indexes_ready
            if idle and time.monotonic() - checked < IDLE_CHECK_S:
                continue  # nothing ingested here: look at the list (other replicas') now and then
            checked = time.monotonic()
            try:
                if self.may_run() and time.monotonic() >= self._paused_until:
                    await self.index_pending()
                    await self.finish_vectors()
                    await self.finish_indexes()
                else:
                    await self.refresh_lag()
                self.stats.last_error = None
                backoff = self.interval_s
            except Exception as exc:  # storage trouble must never reach requests; retried
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("search indexing failed, will retry: %s", self.stats.last_error)
                backoff = min(max(backoff * 2, 0.5), 30.0)

    async def close(self) -> None:
        if self._task is not None:
            self._closing = True
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
