"""The DuckDB connection of the owning process, with reads and writes kept off the event loop.

One process opens the file read-write (see DESIGN.md). Inside it, writes run one at a time on a
single writer thread (so review checks-then-writes are atomic and ingest never races a review),
and reads run on a small pool of threads with their own cursors.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import duckdb

from tuneloop.errors import StorageError

T = TypeVar("T")
Connection = duckdb.DuckDBPyConnection


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private(path: Path) -> None:
    """Make a file we own readable by its owner only (the database holds users' prompts)."""
    if path.exists() and path.stat().st_mode & 0o777 != PRIVATE_FILE:
        path.chmod(PRIVATE_FILE)


def connect(path: Path, *, read_only: bool = False) -> Connection:
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


class Database:
    def __init__(self, path: Path, *, read_threads: int = 3, read_only: bool = False):
        self.path = path
        self._con = connect(path, read_only=read_only)
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="duckdb-write")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="duckdb-read")
        self._closed = False

    def cursor(self) -> Connection:
        """A cursor for the calling thread (DuckDB cursors are not shared across threads)."""
        cur: Connection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def detached_cursor(self) -> Connection:
        """A cursor of its own, for a result kept open across several calls (a stream read a
        page at a time); one thread at a time may use it. The caller closes it."""
        return self._con.cursor()

    def _call(self, fn: Callable[[Connection], T]) -> T:
        return fn(self.cursor())

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._call, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._call, fn)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run on the writer thread and wait (for start-up work, before the loop serves)."""
        return self._writer.submit(self._call, fn).result()

    def interrupt(self) -> None:
        self._con.interrupt()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._con.close()
