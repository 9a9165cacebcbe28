"""The search index of ingest batches, computed in a worker process.

Indexing a batch means reading every interaction's JSON, building its message list and hashing
its words: Python work that held the GIL on the ingest thread for ~20 ms per thousand rows, and
the event loop serving requests felt it as a latency spike once a second
(`bench/proxy_overhead.py`: p99 at 64 clients, +25 ms over direct with the work in-process,
about +10 ms with it in the worker). The worker only computes (`batch_forward_index`, a pure
function); the DuckDB writes stay on the writer thread of the one process that owns the file.

Small batches are indexed in-process (a round trip costs more than the work), and so is
everything when the worker can't be used: if it dies or can't start, the batch is indexed here,
the failure is logged, and the next large batch starts a new worker. Nothing is lost either way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pyarrow as pa

from storage.db import Connection
from storage.search_index import BATCH_COLUMNS, batch_forward_index, store_forward_index

log = logging.getLogger("tuneloop.search")

DEFAULT_MIN_ROWS = 200
PARENT_CHECK_S = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """In the worker: leave when the server is gone. A `kill -9` of the server gives the worker
    no signal, and it would wait for work forever (it holds its own end of the task pipe)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class IndexWorker:
    def __init__(self, *, min_rows: int = DEFAULT_MIN_ROWS):
        self.min_rows = min_rows
        self.in_worker = 0
        self.in_process = 0
        self.failures = 0
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def forward_index(self, batch: pa.Table) -> pa.Table:
        columns = batch.select(BATCH_COLUMNS)
        if columns.num_rows >= self.min_rows:
            pool = self._ensure_pool()
            if pool is not None:
                try:
                    forward: pa.Table = pool.submit(batch_forward_index, columns).result()
                    self.in_worker += columns.num_rows
                    return forward
                except (BrokenProcessPool, OSError, RuntimeError) as exc:
                    self.failures += 1
                    log.error("the search index worker failed (%s: %s); indexing this batch "
                              "in-process", type(exc).__name__, exc)
                    self._discard(pool)
        self.in_process += columns.num_rows
        return batch_forward_index(columns)

    def __call__(self, con: Connection, batch: pa.Table) -> None:
        """IngestHook: index a freshly inserted batch."""
        store_forward_index(con, self.forward_index(batch))

    def worker_pid(self) -> int | None:
        """The worker's process id, once started (for `tuneloop` diagnostics and tests)."""
        with self._lock:
            pool = self._pool
        if pool is None:
            return None
        try:
            return pool.submit(os.getpid).result()
        except (BrokenProcessPool, RuntimeError):
            return None

    def _ensure_pool(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._closed:
                return None
            if self._pool is None:
                try:
                    # spawn: a fork of a process running DuckDB and uvloop threads is unsafe
                    self._pool = ProcessPoolExecutor(
                        1, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_exit_with_parent, initargs=(os.getpid(),))
                except OSError as exc:
                    self.failures += 1
                    log.error("could not start the search index worker: %s", exc)
                    return None
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
