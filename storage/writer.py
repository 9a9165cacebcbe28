"""The log writer: spool append on the request path, batch ingest into DuckDB off it.

`log()` is synchronous and cheap (serialise + one `write`). A background task seals the active
spool file every `interval` and ingests sealed segments, each in one transaction, in pieces
parsed (Arrow) and prepared on a thread while the database takes the piece before; a segment
is deleted only after its rows are committed. Ingest ignores ids already
present, so replaying a segment after a crash never duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.backend import VALUE_ERRORS
from storage.db import Connection
from storage.records import (
    PreparedBatch,
    arrow_from_segment,
    encode_record,
    insert_interactions,
    parse_lines,
    prepare_batch,
    to_arrow,
)
from storage.spool import Spool
from storage.store import Store
from tuneloop.errors import StorageError

log = logging.getLogger("tuneloop.writer")

IngestHook = Callable[[Connection, pa.Table], None]
"""Runs inside the ingest transaction with the batch just inserted (e.g. to index its text).
A hook that also has `compute(batch) -> Callable[[Connection], None]` has that called before
the transaction (its CPU work off the write lock), and the function it returns in it."""
InsertedHook = Callable[[Connection, pa.Table], None]
"""Runs inside the ingest transaction with the rows of a batch actually inserted (a replayed
id or a forgotten user's row is not): e.g. list them for the background search indexer."""
PrepareStep = Callable[[pa.Table], pa.Table]
"""Fills derived columns of a batch before it is inserted (e.g. estimated stream usage)."""


PIECE_ROWS = 2000
"""On Postgres, a segment is parsed, prepared and inserted in pieces of about this many rows
(or `batch_rows`, when smaller), in its one transaction: the database takes piece n while the
preparing thread parses piece n+1, so only the first piece's preparation is not overlapped
(with whole segments, a lone segment was parsed, then written: no overlap at all)."""


@dataclass
class _Piece:
    """A piece of a segment ready to insert: its batches, each prepared
    (storage.records.prepare_batch) with what each hook computed for it."""
    batches: list[tuple[PreparedBatch, list[Callable[[Connection], None]]]]


@dataclass
class _Ready:
    segment: Path
    data: bytes
    pieces: list[Future[_Piece]]
    """Each piece prepared on the writer's preparing thread, in order: the next one while
    the database takes this one."""


def piece_bounds(data: bytes, rows: int) -> list[tuple[int, int]]:
    """(start, end) byte offsets cutting a segment into pieces of about `rows` lines each, at
    line ends (sizes by bytes: rows are of similar size; a piece may hold a few more)."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    count = max(1, -(-lines // max(1, rows)))
    bounds: list[tuple[int, int]] = []
    start = 0
    for k in range(1, count):
        cut = data.find(b"\n", max(start, len(data) * k // count))
        if cut < 0:
            break
        if cut + 1 > start:
            bounds.append((start, cut + 1))
            start = cut + 1
    bounds.append((start, len(data)))
    return bounds


@dataclass
class WriterStats:
    logged: int = 0
    ingested: int = 0
    failures: int = 0
    last_error: str | None = None
    last_ingest_at: float | None = None


class LogWriter:
    def __init__(
        self,
        db: Store,
        spool: Spool,
        *,
        batch_rows: int = 2000,
        interval_s: float = 0.2,
        hooks: Sequence[IngestHook] = (),
        prepare: PrepareStep | None = None,
        after_insert: InsertedHook | None = None,
        on_ingested: Callable[[int], None] | None = None,
        piece_rows: int | None = None,
    ):
        self.db = db
        self.spool = spool
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.hooks = list(hooks)
        self.prepare = prepare
        self.after_insert = after_insert
        self.on_ingested = on_ingested
        self.stats = WriterStats()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fail_until = 0.0
        # when the oldest record of the active file / of the sealed segments was spooled (the
        # ingest lag); a spool left by a previous run counts from now
        self._oldest_pending: float | None = None
        self._oldest_sealed: float | None = time.time() if spool.size_bytes else None
        self._last_loud_log = 0.0
        self._ingesting = asyncio.Lock()
        self._for_postgres = db.dialect == "postgres"
        # DuckDB works in this process, across its own threads: pieces only add statements
        default = PIECE_ROWS if self._for_postgres else batch_rows
        self.piece_rows = max(1, min(batch_rows, piece_rows or default))
        self._preparing = ThreadPoolExecutor(1, thread_name_prefix="ingest-prepare")

    # -- request path ---------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> bool:
        """Spool one interaction. False when the spool is full and the record was dropped."""
        if not self.spool.append(encode_record(record)):
            now = time.monotonic()
            if now - self._last_loud_log > 5:
                self._last_loud_log = now
                log.error(
                    "SPOOL FULL (%d bytes, cap %d): interactions are being DROPPED (%d so far); "
                    "the database has not accepted writes: %s",
                    self.spool.size_bytes, self.spool.max_bytes, self.spool.dropped,
                    self.stats.last_error,
                )
            return False
        self.stats.logged += 1
        if self._oldest_pending is None:
            self._oldest_pending = time.time()
        if self.spool.active_bytes and self.stats.logged % self.batch_rows == 0:
            self._wake.set()
        return True

    # -- fault injection (documented switch, off unless settings.fault_injection) -----------
    def inject_failure(self, seconds: float) -> None:
        self._fail_until = time.monotonic() + seconds

    # -- background ingest -----------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tuneloop-ingest")

    async def _run(self) -> None:
        backoff = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.ingest_pending()
                self.stats.last_error = None  # /healthz: the latest attempt succeeded
                backoff = self.interval_s
            except Exception as exc:  # storage failures must never reach requests
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("ingest failed, will retry (spool holds %d bytes): %s",
                          self.spool.size_bytes, self.stats.last_error)
                backoff = min(max(backoff * 2, 0.5), 5.0)

    async def ingest_pending(self) -> int:
        """Seal the active file and ingest every sealed segment, oldest first. One call at a
        time: forget and compact drain the spool while the background task may be at it."""
        async with self._ingesting:
            return await self._ingest_pending()

    async def _ingest_pending(self) -> int:
        if self._oldest_pending is not None:  # what is sealed now is at least this old
            self._oldest_sealed = min(self._oldest_sealed or self._oldest_pending,
                                      self._oldest_pending)
            self._oldest_pending = None  # records spooled from here on start a new age
        self.spool.seal()
        total = 0
        segments = self.spool.sealed()
        # segment n+1 is parsed and prepared while segment n is written: on Postgres the
        # database's work and ours then overlap (a write holds the lock every replica's
        # writes wait for, so nothing that can happen before it happens in it)
        following: asyncio.Future[_Ready] | None = None
        try:
            for n, segment in enumerate(segments):
                ready = await (following if following is not None else
                               asyncio.to_thread(self._ready_segment, segment))
                following = None
                if n + 1 < len(segments):
                    following = asyncio.ensure_future(
                        asyncio.to_thread(self._ready_segment, segments[n + 1]))
                total += await self.db.write(functools.partial(self._ingest_segment,
                                                               ready=ready))
                self.spool.consume(segment)
        finally:
            if following is not None:  # a write failed: the next segment waits its turn
                with contextlib.suppress(Exception):
                    await following
        self._oldest_sealed = None  # every sealed segment is in (a failure raised above)
        self.stats.ingested += total
        self.stats.last_ingest_at = time.time()
        if total and self.on_ingested is not None:
            self.on_ingested(total)
        return total

    def _ready_segment(self, segment: Path) -> _Ready:
        """A segment read and cut in pieces, each parsed and prepared on the preparing thread
        (in order, so the first piece is ready first)."""
        data = segment.read_bytes()
        pieces = [self._preparing.submit(self._ready_piece, data[start:end],
                                         f"{segment.name} (bytes {start}-{end})")
                  for start, end in piece_bounds(data, self.piece_rows)]
        return _Ready(segment, data, pieces)

    def _ready_piece(self, data: bytes, source: str) -> _Piece:
        """A piece parsed, prepared and cut in batches, with what each hook computed for each
        batch (a hook with `compute(batch)` returns the write to do in the transaction; a
        plain hook is called there)."""
        table = arrow_from_segment(data)
        if table is None:
            table = to_arrow(parse_lines(data, source))
        if self.prepare is not None:
            table = self.prepare(table)
        batches = [table.slice(start, self.batch_rows)
                   for start in range(0, table.num_rows, self.batch_rows)]
        return _Piece([(prepare_batch(batch, for_postgres=self._for_postgres),
                        [self._computed(hook, batch) for hook in self.hooks])
                       for batch in batches])

    @staticmethod
    def _computed(hook: IngestHook, batch: pa.Table) -> Callable[[Connection], None]:
        compute = getattr(hook, "compute", None)
        if compute is not None:
            write: Callable[[Connection], None] = compute(batch)
            return write
        return lambda con: hook(con, batch)

    def _ingest_segment(self, con: Connection, ready: _Ready) -> int:
        if time.monotonic() < self._fail_until:
            raise StorageError("injected storage fault (fault_injection switch)")
        segment, data = ready.segment, ready.data
        try:
            inserted = 0
            con.execute("BEGIN TRANSACTION")
            try:
                for piece in ready.pieces:
                    for batch, writes in piece.result().batches:
                        inserted += insert_interactions(con, batch, then=self.after_insert)
                        for write in writes:
                            write(con)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            return inserted
        except VALUE_ERRORS as exc:
            # One malformed record must not block the spool forever: find the rows the
            # database refuses by halving the batch (each try in its own transaction, a
            # savepoint on Postgres, so the ingest transaction survives the failed statement)
            # and set them aside in a quarantine file; every other row is inserted.
            log.error("segment %s has a record the database refuses (%s); isolating it",
                      segment.name, exc)
            return self._insert_isolating(con, parse_lines(data, segment.name))

    def _insert_isolating(self, con: Connection, rows: list[dict[str, Any]]) -> int:
        try:
            return self._insert_table(con, to_arrow(rows))
        except VALUE_ERRORS as exc:
            if len(rows) == 1:
                self.spool.quarantine(rows[0], str(exc))
                return 0
        half = len(rows) // 2
        return self._insert_isolating(con, rows[:half]) + \
            self._insert_isolating(con, rows[half:])

    def _insert_table(self, con: Connection, table: pa.Table) -> int:
        if self.prepare is not None:
            table = self.prepare(table)
        inserted = 0
        con.execute("BEGIN TRANSACTION")
        try:
            for start in range(0, table.num_rows, self.batch_rows):
                batch = table.slice(start, self.batch_rows)
                inserted += insert_interactions(con, batch, then=self.after_insert)
                for hook in self.hooks:
                    hook(con, batch)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        return inserted

    def ingest_lag_seconds(self) -> float:
        """Age of the oldest record spooled and not yet ingested (0 when there is none)."""
        oldest = min((t for t in (self._oldest_sealed, self._oldest_pending) if t is not None),
                     default=None)
        return 0.0 if oldest is None else time.time() - oldest

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop the background task and drain what is left (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.ingest_pending(), timeout=timeout_s)
        except Exception as exc:
            log.error("could not drain the spool at shutdown (it is replayed at next start): %s",
                      exc)
        self._preparing.shutdown(wait=False, cancel_futures=True)
        self.spool.close()
