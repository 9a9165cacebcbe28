"""How long the upstream has been silent, to tell a stall from a user's cancel.

A client that hangs up after the upstream sent nothing for `upstream_stall_s` (no byte before
the answer started, or since the stream's last chunk) gave up on a stall: the request is an
error of the target (`route.stalled_s`, storage/route_health.py). A quicker hang-up is the
user's own cancel, judged for nobody."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class UpstreamSilence:
    since: float = field(default_factory=time.perf_counter)

    def heard(self) -> float:
        """The upstream was just asked or sent something; the time now."""
        self.since = time.perf_counter()
        return self.since

    def stalled_s(self, limit_s: float) -> float | None:
        """How long the upstream has been silent, when it is at least `limit_s`."""
        silent = time.perf_counter() - self.since
        return round(silent, 3) if silent >= limit_s else None
