"""A process's resident memory, now and at its peak while something runs (the benchmarks'
RSS figures: sampled every 10 ms from /proc, so a peak shorter than that can be missed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType


def rss_mb(pid: int | str = "self") -> int:
    """The resident memory of process `pid` in MB (-1 when /proc does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


class PeakRss:
    """`with PeakRss(pid) as rss:` ... then `rss.base` (MB when it began) and `rss.peak`."""

    def __init__(self, pid: int | str = "self"):
        self.pid = pid
        self.base = self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_mb(self.pid)
        self._watcher.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._watcher.join()
        self.peak = max(self.peak, rss_mb(self.pid))
