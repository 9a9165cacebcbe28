"""Limits on password guessing at the review app's sign-in, shared by every session of the
server process (one `SignInLimiter`, held by `session.py` as a cached resource).

- Per reviewer name (case and spaces folded, so "Sam" and " sam" count together): after
  `free_failures` failed attempts the name is locked for `base_lock_s`, doubling with every
  further failure up to `max_lock_s`. A successful sign-in clears the name's count; failures
  older than `forget_after_s` are forgotten.
- Globally: a token bucket of failed attempts (`global_burst`, refilled at `global_per_s`):
  when many names are guessed at once, every sign-in waits until the bucket refills.

While a name (or the whole sign-in) is locked, the password is not even checked, so a guess
made then tells nothing. Failed attempts are logged with the name and the count, never the
password."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

log = logging.getLogger("tuneloop.ui.signin")


@dataclass
class _Name:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass
class SignInLimiter:
    free_failures: int = 5
    base_lock_s: float = 30.0
    max_lock_s: float = 900.0
    forget_after_s: float = 3600.0
    global_burst: float = 30.0
    global_per_s: float = 0.5
    max_names: int = 10_000
    _names: dict[str, _Name] = field(default_factory=dict)
    _tokens: float = -1.0
    _refilled_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _fold(name: str) -> str:
        return " ".join(name.split()).casefold()

    def _refill(self, now: float) -> None:
        if self._tokens < 0:
            self._tokens, self._refilled_at = self.global_burst, now
        self._tokens = min(self.global_burst,
                           self._tokens + (now - self._refilled_at) * self.global_per_s)
        self._refilled_at = now

    def wait_s(self, name: str, now: float) -> float:
        """Seconds until `name` may try again (0: it may try now)."""
        with self._lock:
            self._refill(now)
            wait = 0.0
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.global_per_s
            entry = self._names.get(self._fold(name))
            if entry is not None:
                wait = max(wait, entry.locked_until - now)
            return max(0.0, wait)

    def failed(self, name: str, now: float) -> float:
        """Count a failed attempt (and log it); the seconds `name` is locked for now."""
        key = self._fold(name)
        with self._lock:
            self._refill(now)
            self._tokens -= 1
            entry = self._names.get(key)
            if entry is None or now - entry.last_failure > self.forget_after_s:
                entry = _Name()
            entry.failures += 1
            entry.last_failure = now
            over = entry.failures - self.free_failures
            lock = 0.0
            if over >= 0:
                lock = min(self.max_lock_s, self.base_lock_s * 2 ** over)
                entry.locked_until = now + lock
            self._names[key] = entry
            self._prune(now)
        log.warning("review app: failed sign-in for reviewer name %r (%d in a row%s)",
                    name[:128], entry.failures, f", locked for {lock:.0f} s" if lock else "")
        return lock

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._names.pop(self._fold(name), None)

    def _prune(self, now: float) -> None:
        if len(self._names) <= self.max_names:
            return
        stale = [k for k, e in self._names.items()
                 if now - e.last_failure > self.forget_after_s and e.locked_until <= now]
        for key in stale:
            del self._names[key]
        while len(self._names) > self.max_names:  # the oldest go first
            del self._names[min(self._names, key=lambda k: self._names[k].last_failure)]
