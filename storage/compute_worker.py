"""A worker process for the CPU-bound Python work of ingest.

Some ingest work is plain Python: building the search index of a batch (read every
interaction's JSON, build its message list, hash its words) and estimating the tokens of
streams that reported none (tiktoken; loading an encoding parses its file in Python for half a
second). On the ingest thread that work held the GIL the event loop needs, and requests felt it:
`bench/proxy_overhead.py` saw p99 at 64 clients go from +25 ms over direct with the index built
in-process to about +13 ms with it here, and one stream waited 0.5 s while an encoding loaded.
The worker only computes, with pure functions; the DuckDB writes stay on the writer thread of
the one process that owns the file.

If the worker can't be used (it died, or can't start), the work runs in-process, the failure
is logged, and a new worker is tried after `retry_after_s`: nothing is lost either way. The
worker leaves by itself when the server is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger("tuneloop.worker")

A = TypeVar("A")
R = TypeVar("R")
PARENT_CHECK_S = 0.5
RETRY_AFTER_S = 30.0  # after a failure, work runs in-process this long (a worker that can't
# start, or dies on every call, must not cost a spawn per call)


def _exit_with_parent(parent_pid: int) -> None:
    """In the worker: leave when the server is gone. A `kill -9` of the server gives the worker
    no signal, and it would wait for work forever (it holds its own end of the task pipe)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ComputeWorker:
    def __init__(self, *, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.calls = 0
        self.failures = 0
        self.retry_after_s = retry_after_s
        self._broken_until = 0.0
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[[A], R], arg: A) -> R:
        """`fn(arg)` in the worker (a module-level function and picklable argument), or here
        when the worker can't be used."""
        self.calls += 1
        pool = self._ensure_pool()
        if pool is not None:
            try:
                return pool.submit(fn, arg).result()
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                self.failures += 1
                log.error("the worker process failed (%s: %s); running %s in-process, and "
                          "everything for %g s", type(exc).__name__, exc,
                          getattr(fn, "__name__", fn), self.retry_after_s)
                self._discard(pool)
        return fn(arg)

    def worker_pid(self) -> int | None:
        """The worker's process id, once started (diagnostics and tests)."""
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
            if self._closed or time.monotonic() < self._broken_until:
                return None
            if self._pool is None:
                try:
                    # spawn: a fork of a process running DuckDB and uvloop threads is unsafe
                    self._pool = ProcessPoolExecutor(
                        1, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_exit_with_parent, initargs=(os.getpid(),))
                except OSError as exc:
                    self.failures += 1
                    self._broken_until = time.monotonic() + self.retry_after_s
                    log.error("could not start the worker process: %s", exc)
                    return None
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
            self._broken_until = time.monotonic() + self.retry_after_s
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
