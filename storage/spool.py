"""The local spool: every interaction is appended here (one plain write, no fsync) before the
last bytes of its response reach the client, so a crash of the proxy loses nothing.

Files live in one directory: `active-N.jsonl` is being appended to; `seg-N.jsonl` are sealed
segments waiting for ingest. A leftover `active-N.jsonl` after a crash is sealed at start-up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tuneloop.errors import StorageError

log = logging.getLogger("tuneloop.spool")
QUARANTINE_FILE = "quarantine.jsonl"
LOCK_FILE = ".lock"
_SEGMENT = re.compile(r"^(active|seg)-(\d{12})\.jsonl$")


def _lock(directory: Path) -> int:
    """One process per spool: two replicas appending to (and ingesting) the same files would
    interleave records and ingest segments twice. The lock goes with the process, `kill -9`
    included."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(
            f"the spool {directory} is in use by another tuneloop process; give each replica "
            "its own (TUNELOOP_SPOOL_DIR, or TUNELOOP_STATE_DIR with Postgres)") from None
    return fd


class Spool:
    def __init__(self, directory: Path, max_bytes: int, *, seal_bytes: int = 16 * 1024 * 1024):
        self.directory = directory
        self.max_bytes = max_bytes
        self.seal_bytes = seal_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if directory.stat().st_mode & 0o777 != 0o700:
            directory.chmod(0o700)  # ours alone: made 0755 by an older version or a umask
        self._lock_fd = _lock(directory)
        self.dropped = 0
        self.peak_bytes = 0
        self._fd: int | None = None
        self._active_bytes = 0
        self._sealed_bytes = 0
        self._next = 0
        for path in sorted(directory.iterdir()):
            match = _SEGMENT.match(path.name)
            if not match:
                continue
            number = int(match.group(2))
            self._next = max(self._next, number + 1)
            if match.group(1) == "active":
                path.rename(self._sealed_name(number))
        self._sealed_bytes = sum(p.stat().st_size for p in self.sealed())

    def _sealed_name(self, number: int) -> Path:
        return self.directory / f"seg-{number:012d}.jsonl"

    @property
    def size_bytes(self) -> int:
        return self._active_bytes + self._sealed_bytes

    @property
    def active_bytes(self) -> int:
        return self._active_bytes

    def append(self, line: bytes) -> bool:
        """Append one record (ending in a newline). False if the spool is full: dropped."""
        if self.size_bytes + len(line) > self.max_bytes:
            self.dropped += 1
            return False
        if self._fd is None:
            path = self.directory / f"active-{self._next:012d}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._active_bytes += len(line)
        self.peak_bytes = max(self.peak_bytes, self.size_bytes)
        if self._active_bytes >= self.seal_bytes:
            self.seal()
        return True

    def seal(self) -> None:
        """Close the active file and make it a sealed segment (no-op when nothing is active)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        active = self.directory / f"active-{self._next:012d}.jsonl"
        active.rename(self._sealed_name(self._next))
        self._next += 1
        self._sealed_bytes += self._active_bytes
        self._active_bytes = 0

    def sealed(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("seg-*.jsonl") if _SEGMENT.match(p.name))

    def consume(self, path: Path) -> None:
        """Forget a segment whose records are safely in the database."""
        size = path.stat().st_size
        path.unlink()
        self._sealed_bytes = max(0, self._sealed_bytes - size)

    def quarantine(self, record: dict[str, object], reason: str) -> None:
        """Keep a record the database refused, with the reason, for a human to look at."""
        line = orjson.dumps({"reason": reason, "record": record}, option=orjson.OPT_APPEND_NEWLINE)
        fd = os.open(self.directory / QUARANTINE_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(line)
        log.error("record %s quarantined in %s: %s", record.get("id"),
                  self.directory / QUARANTINE_FILE, reason)

    def drop_quarantined(self, doomed: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the quarantined records `doomed` selects (forget, retention); the file is
        rewritten and swapped in atomically. A line that can't be read is kept (it can't be
        told whose it is) and reported."""
        path = self.directory / QUARANTINE_FILE
        if not path.exists():
            return 0
        kept: list[bytes] = []
        dropped = 0
        for number, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
            try:
                record = orjson.loads(line).get("record")
            except (orjson.JSONDecodeError, AttributeError):
                log.error("%s line %d is unreadable; kept", path, number)
                kept.append(line)
                continue
            if isinstance(record, dict) and doomed(record):
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            fresh = path.with_name(QUARANTINE_FILE + ".tmp")
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"".join(kept))
            os.replace(fresh, path)
        return dropped

    def close(self) -> None:
        self.seal()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
