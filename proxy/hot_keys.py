"""Which sticky keys (user or session ids) are *hot*: sent too large a share of one client
key's recent requests to an alias, so proxy/routing.py draws them per request (see
:class:`HotKeys`)."""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

HOT_WINDOW = 200
"""The last sticky requests per alias and client key that :class:`HotKeys` looks at."""
HOT_SHARE = 0.1
HOT_MIN = 10
"""A key is hot when it sent more than HOT_SHARE of the window and at least HOT_MIN of it."""
HOT_SETTLED = 1024
"""At most this many windows holding HOT_MIN requests or more are kept (least recently used
dropped first); with HOT_NEW, what bounds the memory however many client keys send."""
HOT_NEW = 4096
"""At most this many windows holding fewer than HOT_MIN requests (no hot id yet)."""


@dataclass
class _Window:
    # the keys' hash(), not the keys: the memory does not grow with the ids' length (up to
    # 256 characters); a collision (64 bits, salted per process) only joins two ids of one
    # client's own window
    recent: deque[int] = field(default_factory=deque)
    counts: Counter[int] = field(default_factory=Counter)


@dataclass
class HotKeys:
    """The sticky keys of the last `window` requests that named one, per alias and client
    key. A sticky key that sent more than `HOT_SHARE` of them (and at least `HOT_MIN`) is
    *hot*: a constant `user` from an app's backend, or one very heavy user. A hot key is drawn
    per request, so it cannot put all of the alias's traffic (or a large share of it) on one
    target: stickiness is kept for keys with enough company.

    Each client key has its own window (r14n HIGH 1): with one window per alias, another
    key's requests with fresh user ids pushed an app's few ids under HOT_SHARE, and its rows
    turned sticky, capped at `max_requests_per_user` per id in the canary's test. The windows
    are bounded: `settled` ones (HOT_MIN requests or more, the only ones that can hold a hot
    key) and `new` ones, each an LRU of its own, so made-up keys sending a request or a few
    each (any bearer is a client key when the proxy issues none) only push out one another.
    A window dropped restarts empty (its keys sticky until one has HOT_MIN requests again);
    pushing out an app's settled window takes `max_settled` other keys reaching HOT_MIN
    requests each between two of the app's requests. The counts are this process's own (each
    replica keeps its own windows, empty after a restart)."""

    window: int = HOT_WINDOW
    max_settled: int = HOT_SETTLED
    max_new: int = HOT_NEW
    settled: OrderedDict[tuple[str, str], _Window] = field(default_factory=OrderedDict)
    new: OrderedDict[tuple[str, str], _Window] = field(default_factory=OrderedDict)

    def _window_of(self, alias: str, client: str) -> _Window:
        at = (alias, client)
        found = self.settled.get(at)
        if found is not None:
            self.settled.move_to_end(at)
            return found
        found = self.new.pop(at, None) or _Window()
        if len(found.recent) + 1 >= HOT_MIN:
            self.settled[at] = found
            if len(self.settled) > self.max_settled:
                self.settled.popitem(last=False)
        else:
            self.new[at] = found
            if len(self.new) > self.max_new:
                self.new.popitem(last=False)
        return found

    def seen(self, alias: str, key: str, client: str = "") -> bool:
        """Count one request of sticky `key` on `alias` from `client` (its client key);
        whether the key is hot in that client's window."""
        found = self._window_of(alias, client)
        recent, counts, hashed = found.recent, found.counts, hash(key)
        recent.append(hashed)
        counts[hashed] += 1
        if len(recent) > self.window:
            gone = recent.popleft()
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
        return counts[hashed] >= HOT_MIN and counts[hashed] > HOT_SHARE * len(recent)
