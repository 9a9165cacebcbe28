"""What both stores share: a write runs on the one writer thread, a read on a pool of reader
threads, so neither blocks the event loop. Each store says how one call runs
(`_write_call`, `_read_call`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadedStore:
    _writer: ThreadPoolExecutor
    _readers: ThreadPoolExecutor

    def _write_call(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _read_call(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    async def write(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._write_call, fn)

    async def read(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_call, fn)

    def write_sync(self, fn: Callable[[Any], T]) -> T:
        """Run on the writer thread and wait (for start-up work, before the loop serves)."""
        return self._writer.submit(self._write_call, fn).result()

    def read_sync(self, fn: Callable[[Any], T]) -> T:
        """Run on the calling thread (for work already off the event loop)."""
        return self._read_call(fn)
