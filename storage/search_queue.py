"""The background search indexer: indexes what ingest listed in `search_pending`.

Ingest only lists the ids of the reviewable interactions it inserted, each with the size of
its text (storage.search_index `queue_for_index`, in the ingest transaction); tokenizing
their text, most of the ingest's time when done inline, happens here, off its critical path:

1. read the oldest listed interactions, at most `batch_rows` and about `batch_bytes` of text
   (storage.search_tail, by the sizes listed with them at ingest; a read: no write lock held),
2. compute their forward index (in the compute worker process when there is one),
3. in one write transaction, take them off the list (`DELETE ... RETURNING`) and write the
   terms of those this transaction took (`store_claimed`); a batch in several such
   transactions, each of at most WRITE_TERMS postings and words and sized to take about
   WRITE_BUDGET_S by the rows a second the writes before it stored (`run_length`; the
   first, one interaction, measures), because on Postgres a write holds the deployment's
   write lock, which every replica's ingest, reviews and claims wait for;
4. on Postgres, after each write, merge the GIN index's pending list (storage.search_vectors
   `clean_pending`) outside the write lock.

Why 4 (review r12y MED 3): writes into `search_docs` append each row's lexemes to the GIN's
pending list, and the write that makes that list outgrow gin_pending_list_limit (4 MB) merges
all of it into the index inside its transaction, under the lock: 2.4-2.6 s at 300k rows (the
lexemes themselves, the tsvector trigger, cost ~25 ms a row at the caps). Merged after each
write, the list holds about one write's entries, so no locked write merges it; Postgres lets
inserts skip a merge while another runs, so the merge here makes no one wait but this loop.
The terms are still written in the transaction that takes the rows off the list (step 3), so
nothing here changes what a crash or a second leader can leave: a crash after step 3 leaves
the entries pending, searched as they are and merged by the next write's step 4 or by
autovacuum. Rejected: writing `search_docs` in a transaction of its own without the lock
(an interaction `forget` deleted meanwhile would keep its terms; a crash between the two
writes would leave a row both indexed and listed).

The listed rows are taken oldest first within a share per client key (storage.search_fair:
the key listed with each row at ingest, routed or not): one key's wide rows are indexed a
quantum at a time after the other keys' rows.

So a crash (`kill -9`) anywhere leaves an interaction listed and unindexed or indexed and
unlisted, never indexed twice; a replica racing another, or `forget`/retention deleting
rows meanwhile, only makes step 3 take fewer (nothing is written for a row it didn't take).
With replicas, the one holding the change feed's leader lock indexes (`may_run`); another
taking over goes on from the list. Search reads the unindexed tail itself (storage.search),
and `lag_rows`/`lag_seconds` are in /metrics, refreshed every LAG_REFRESH_S during a backlog
(`tail_missed_rows`: those of them search's tail leaves out, in /healthz); each count runs
under a statement timeout on Postgres (storage.search_lag), unknown when not done in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from storage.backend.pg_database import PgDatabase
from storage.db import Connection
from storage.online_indexes import build_indexes
from storage.search_fair import KEY_TERMS, KeyShares, pending_batch
from storage.search_index import (
    ForwardIndex,
    SearchIndexer,
    store_claimed,
)
from storage.search_lag import index_lag_within, tail_missed_within
from storage.search_tail import BATCH_BYTES, TAIL_ROWS
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
# and each is sized to hold the write lock about this long, by the rows a second the writes
# before it stored (4,000 to 25,000 rows, a few rows at the caps, on the reviewed Postgres)
WRITE_BUDGET_S = 0.2


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


def run_length(ids: Sequence[str], widths: dict[str, int], max_terms: int) -> int:
    """How many of `ids` (in order) one write takes: those whose rows written (postings and
    words) add up to at most `max_terms`, at least one interaction, whatever its width."""
    total = 0
    for n, interaction in enumerate(ids):
        total += widths.get(interaction) or 0
        if n and total > max_terms:
            return n
    return len(ids)


def timed_store(con: Connection, forward: ForwardIndex, ids: Sequence[str]) -> tuple[int, float]:
    """`store_claimed`, and the seconds it took (in the write transaction: the lock held)."""
    started = time.perf_counter()
    claimed = store_claimed(con, forward, ids)
    return claimed, time.perf_counter() - started


class BackgroundIndexer:
    def __init__(self, db: Store, indexer: SearchIndexer, *, batch_rows: int = 2000,
                 interval_s: float = 1.0, may_run: Callable[[], bool] | None = None,
                 write_terms: int = WRITE_TERMS, batch_bytes: int = BATCH_BYTES,
                 key_terms: int = KEY_TERMS,
                 tail_check_timeout_s: float = TAIL_CHECK_TIMEOUT_S,
                 lag_refresh_s: float = LAG_REFRESH_S, lag_timeout_s: float = LAG_TIMEOUT_S,
                 merge_gin: bool = True, write_budget_s: float | None = WRITE_BUDGET_S,
                 on_written: Callable[[list[str]], None] | None = None):
        """`merge_gin` False and `write_budget_s` None: leave the GIN's pending list to the
        writes that fill it, and size writes by `write_terms` alone (the behaviour before
        review r12y MED 3, for bench/pg_index_lock.py; None also for tests that count
        writes); `on_written`: a test's or bench's hook, called after each write transaction
        with the ids given it."""
        self.db = db
        self.write_budget_s = write_budget_s
        self._rows_per_s: float | None = None  # of the writes so far (a moving average)
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
        """Store a batch in write transactions each of at most write_terms rows and about
        write_budget_s, leaving listed the rows of keys whose quantum is spent (kept ready
        for their next quantum)."""
        widths = row_widths(forward)
        taken = 0
        left = list(ids)
        while left:
            n = run_length(left, widths, self._terms_per_write())
            part_ids, left = left[:n], left[n:]
            part = forward if n == len(ids) else only_ids(forward, part_ids)
            allowed = [i for i in part_ids if self.shares.may_write(keys.get(i, ""))]
            if len(allowed) < len(part_ids):
                written = set(allowed)
                rest = [i for i in part_ids if i not in written]
                for key in dict.fromkeys(keys.get(i, "") for i in rest):
                    of_key = [i for i in rest if keys.get(i, "") == key]
                    self._ready.setdefault(key, []).append((only_ids(part, of_key), of_key))
                if not allowed:
                    continue
                part = only_ids(part, allowed)
            claimed, seconds = await self.db.write(functools.partial(
                timed_store, forward=part, ids=allowed))
            if claimed == len(allowed):
                self._measured(sum(widths.get(i, 0) for i in allowed), seconds)
            if self.on_written is not None:
                self.on_written(allowed)
            if claimed:
                await self._merge_pending_list()
            taken += claimed
            self.stats.indexed += claimed
            for interaction in allowed:
                self.shares.charge(keys.get(interaction, ""), widths.get(interaction, 0))
        return taken

    def _terms_per_write(self) -> int:
        """The rows (postings and words) the next write may store: write_terms, or fewer by
        the time budget (one interaction, to measure, before any write is measured)."""
        if self.write_budget_s is None:
            return self.write_terms
        if self._rows_per_s is None:
            return 0
        return min(self.write_terms, int(self._rows_per_s * self.write_budget_s))

    def _measured(self, rows: int, seconds: float) -> None:
        if rows > 0:
            rate = rows / max(seconds, 1e-6)
            self._rows_per_s = rate if self._rows_per_s is None \
                else (self._rows_per_s + rate) / 2

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
