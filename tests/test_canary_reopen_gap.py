"""A re-opened canary's health counts only the time it was open (review r14m LOW): the watch
read every row since the first window opened, so the closed time's rows (all the current
target's) counted as the stable arm's evidence beside the canary, and each key's requests then
as spent against allowances that count only the open time (exporter/canary_strata.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import CANARY, STABLE
from tests.test_canary_strata import ALIAS, Deployment

pytestmark = both_stores

CLOSED = 30
"""The app's requests while the canary is closed (all the current target's)."""


def test_a_reopened_canarys_stable_arm_leaves_out_the_closed_time(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """The app sends 10 requests in the canary's first window, CLOSED while it is closed, 10
    once it is re-opened (its test going on from the first window): the watch's stable arm
    counts the two windows' stable requests, never the closed time's (on main: all of them)."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path, percent=50)
    app = deployment.client("app")
    deployment.send(app, 10)
    first = deployment.admin.promote(ALIAS, CANARY, canary=50)["changed_at"]
    deployment.send(app, 10)
    closed = deployment.admin.rollback(ALIAS)["changed_at"]
    open_s = (datetime.fromisoformat(closed) - datetime.fromisoformat(first)).total_seconds()
    deployment.send(app, CLOSED)
    deployment.open_canary()
    deployment.state |= {"evidence_since": first, "evidence_open_s": open_s}
    deployment.send(app, 10)
    step = deployment.watch()

    def stable_requests(since: str, until: str | None = None) -> int:
        rows = deployment.admin.route_health(ALIAS, since=since, until=until)["targets"]
        return sum(row["requests"] for row in rows if row["target"] == STABLE)

    windows = stable_requests(first, closed) + stable_requests(deployment.state["promoted_at"])
    everything = stable_requests(first)
    print(f"\nre-opened: stable arm {step.detail['stable']['requests']} requests; the open "
          f"windows' {windows}, with the closed time's {everything}")
    assert everything == windows + CLOSED  # else the test tells nothing
    assert step.detail["stable"]["requests"] == windows, step.detail["stable"]
