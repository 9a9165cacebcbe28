"""Why a canary with few sticky users stays undecided, said with the numbers (review r14m
MED 3): the error test weighs a sticky user at most `max_requests_per_user` requests per
target, and `min_requests` counts a user's at most 4 x that (storage/route_health.py
`counted_requests`), so once the users drawn onto the canary are at those caps, more of their
requests add nothing and the canary waits for new users, until `max_hours` rolls it back. The
watch says so in its note (the cycle's output) instead of a silent rollback every cycle.

The health gives the canary's `sticky_users` and what its counts would be were every one of
them at its cap (`weighed_ceiling`, `counted_ceiling`); a count at `NEAR` of its ceiling is
stuck there. Read on the rows before the strata cut them (`unstratified_*`): the caps are the
users', whatever the strata then make of each key."""

from __future__ import annotations

from typing import Any

from exporter.cycle_config import CanaryConfig

NEAR = 0.9
"""A count at this share of its ceiling or more is stuck at it: its users are (almost) all at
their caps."""


def few_users_warning(canary: dict[str, Any], cfg: CanaryConfig, percent: float) -> str | None:
    """The warning for an undecided canary stuck at its sticky users' caps (module doc), with
    the numbers and what to change; None when it is not (or a server without the ceilings)."""
    users = canary.get("sticky_users")
    if not users or "weighed_ceiling" not in canary:
        return None
    counted = float(canary.get("unstratified_counted", canary.get("counted_requests", 0)))
    weighed = float(canary.get("unstratified_requests", canary.get("weighed_requests", 0)))
    per = cfg.max_requests_per_user
    # requests drawn per request count once in both: the users' part is the rest
    drawn = float(canary["weighed_ceiling"]) - users * per
    counted_top = float(canary["counted_ceiling"])
    bigger = min(90, max(percent * 2, percent + 10))
    fix = (f"open a bigger canary ([canary] percent {bigger:g} instead of {percent:g}: more "
           "users on it) or wait for new users")
    if counted_top < cfg.min_requests and counted - drawn >= NEAR * users * 4 * per:
        return (f"warning: the canary's {users} sticky users count at most {4 * per} requests "
                f"each toward min_requests (4 x max_requests_per_user): {users} x {4 * per}"
                f"{_plus(drawn)} = {counted_top:g} < min_requests {cfg.min_requests}, so it is "
                f"never promoted unless new users reach it: {fix}, or lower min_requests")
    if weighed - drawn >= NEAR * users * per:
        return (f"warning: the canary's {users} sticky users weigh at most "
                f"max_requests_per_user {per} each in the error test ({weighed:g} of at most "
                f"{users} x {per}{_plus(drawn)}): more of their requests add no evidence, so it "
                f"may stay undecided until max_hours rolls it back: {fix}")
    return None


def _plus(drawn: float) -> str:
    return f" + {drawn:g} drawn per request" if drawn > 0 else ""
