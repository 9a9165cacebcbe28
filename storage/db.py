"""The DuckDB connection of the owning process, with reads and writes kept off the event loop.

One process opens the file read-write (see DESIGN.md). Inside it, writes run one at a time on a
single writer thread (so review checks-then-writes are atomic and ingest never races a review),
and reads run on a small pool of threads with their own cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import duckdb

from storage.backend.pg_connection import PgConnection
from storage.backend.threads import ThreadedStore
from storage.compact import CompactResult, compact_file
from tuneloop.errors import StorageError

T = TypeVar("T")
DuckConnection = duckdb.DuckDBPyConnection
Connection = DuckConnection | PgConnection
"""What storage functions take: a DuckDB connection or a Postgres one (storage.backend)."""


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private(path: Path) -> None:
    """Make a file we own readable by its owner only (the database holds users' prompts)."""
    if path.exists() and path.stat().st_mode & 0o777 != PRIVATE_FILE:
        path.chmod(PRIVATE_FILE)


def connect(path: Path, *, read_only: bool = False) -> DuckConnection:
    """Open the database file. External access (file reads, COPY, ATTACH, extensions) is off:
    nothing in tuneloop needs DuckDB to touch other files, and `tuneloop sql` must not.

    Opened read-write, the file (and a WAL left beside it) is made 0600, and a folder created
    for it 0700. DuckDB creates the WAL again after each checkpoint with the process umask:
    `tuneloop serve` sets a umask of 0o077 so that every file the server creates is private."""
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    config: dict[str, str | bool | int | float | list[str]] = {
        "enable_external_access": False,
        "lock_configuration": True,
    }
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.IOException as exc:
        raise StorageError(
            f"cannot open {path}: {exc}. Is another tuneloop server running on it? While one "
            "is, use the admin API (`tuneloop sql`) instead of opening the file."
        ) from exc
    if not read_only and path.name != ":memory:":
        private(path)
        private(path.with_name(path.name + ".wal"))
    return con


class _Gate:
    """Reads share the connection; compacting the file needs it alone (it closes it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    def enter(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._readers += 1

    def leave(self) -> None:
        with self._cond:
            self._readers -= 1
            self._cond.notify_all()

    def lock(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._readers == 0)

    def unlock(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()


class Database(ThreadedStore):
    dialect = "duckdb"

    def __init__(self, path: Path, *, read_threads: int = 3, read_only: bool = False):
        self.path = path
        self._read_only = read_only
        self._con = connect(path, read_only=read_only)
        self._generation = 0  # a new connection after each compaction: cursors are re-made
        self._cursors: weakref.WeakSet[DuckConnection] = weakref.WeakSet()
        self._gate = _Gate()
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-write")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="duckdb-read")
        self._closed = False

    def cursor(self) -> DuckConnection:
        """A cursor for the calling thread (DuckDB cursors are not shared across threads)."""
        cur: DuckConnection | None = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "generation", -1) != self._generation:
            cur = self._con.cursor()
            self._cursors.add(cur)
            self._local.cursor = cur
            self._local.generation = self._generation
        return cur

    def detached_cursor(self) -> DuckConnection:
        """A cursor of its own, for a result kept open across several calls (a stream read a
        page at a time); one thread at a time may use it. The caller closes it. Made while a
        compaction runs, it waits for the new file; one in use when a compaction starts is
        closed by it (that read fails with an error)."""
        self._gate.enter()
        try:
            cur = self._con.cursor()
            self._cursors.add(cur)
        finally:
            self._gate.leave()
        return cur

    def _write_call(self, fn: Callable[[DuckConnection], T]) -> T:
        return fn(self.cursor())

    def _read_call(self, fn: Callable[[DuckConnection], T]) -> T:
        self._gate.enter()
        try:
            return fn(self.cursor())
        finally:
            self._gate.leave()

    async def compact(self) -> CompactResult:
        """Rewrite the file without its free blocks (storage.compact), on the writer thread:
        no write (ingest included: the spool keeps the interactions meanwhile) and no read
        runs until the new file is open."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._compact)

    def _compact(self) -> CompactResult:
        if self._read_only:
            raise StorageError("a read-only database cannot be compacted")
        self._gate.lock()
        try:
            for cur in list(self._cursors):
                with contextlib.suppress(duckdb.Error):
                    cur.close()
            self._cursors.clear()
            self._con.close()
            try:
                return compact_file(self.path)
            finally:
                self._con = connect(self.path)  # the new file, or the untouched old one
                self._generation += 1
        finally:
            self._gate.unlock()

    def interrupt(self) -> None:
        self._con.interrupt()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._con.close()
