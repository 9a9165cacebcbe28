"""How long the upstream has been silent, to tell a stall from a user's cancel.

A client that hangs up after the upstream sent nothing for `upstream_stall_s` (no byte before
the answer started, or since the stream's last chunk) gave up on a stall: the request is an
error of the target (`route.stalled_s`, storage/route_health.py). A quicker hang-up is the
user's own cancel, judged for nobody. Only the time waiting on the upstream is silence: while
the proxy waits on the client to take a chunk (a client that stops reading a large stream
blocks the send), the clock is stopped (`client_turn`), so a client cannot make its own
backpressure read as the target's stall (r14c #2)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class UpstreamSilence:
    since: float | None = field(default_factory=time.perf_counter)
    """When the proxy began waiting on the upstream; None while it waits on the client."""

    def heard(self) -> float:
        """The upstream was just asked or sent something; the time now."""
        self.since = time.perf_counter()
        return self.since

    def client_turn(self) -> None:
        """The proxy now waits on the client (sending it a chunk), not on the upstream: no
        silence of the upstream until `heard` again."""
        self.since = None

    def stalled_s(self, limit_s: float) -> float | None:
        """How long the upstream has been silent, when it is at least `limit_s` (None while
        the proxy waits on the client)."""
        if self.since is None:
            return None
        silent = time.perf_counter() - self.since
        return round(silent, 3) if silent >= limit_s else None
