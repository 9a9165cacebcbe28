"""The strata's pools (exporter/canary_strata.py, exporter/canary_missing.py, outside review
r14k HIGH 1, r14l HIGH 1-2): every key's missing rows as one pool, and the fresh keys sharing
ONE allowance, never more than the live history keys count. Numbers, then a real proxy issuing
keys judged by the cycle's watch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.canary_missing import pooled
from exporter.canary_strata import NEW_KEYS_PART, SLACK, Strata, stratified
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_canary_missing_keys import (
    KEYS,
    hang_up_from_many_keys,
    promoted_despite_hang_ups,
)
from tests.test_canary_strata import Deployment


def row(keys: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """A health row from each key's (trials, failures, missing)."""
    return {"weighed_requests": sum(n for n, _, _ in keys.values()),
            "weighed_errors": sum(x for _, x, _ in keys.values()),
            "opinions_missing": sum(m for _, _, m in keys.values()),
            "opinions_missing_weighed": sum(m for _, _, m in keys.values()),
            "by_key": {k: {"trials": n, "failures": x, "traffic": n, "missing": m}
                       for k, (n, x, m) in keys.items()}}


EMPTY = row({})


def strata(rates: dict[str, float], elapsed_s: float = 1.0 / SLACK) -> Strata:
    """Rates per second over an elapsed time after which each key's allowance is its rate."""
    return Strata(rates, elapsed_s)


def test_every_fresh_key_shares_one_allowance_bound_by_the_live_history_keys() -> None:
    """r14l HIGH 1-2 (was r14k HIGH 2's "every live key fresh takes the route's usual rate",
    which let N fresh keys count N times the app): the fresh keys share ONE allowance,
    NEW_KEYS_PART of the route's rate and at most NEW_KEYS_PART x SLACK of what the live
    history keys count; with no history key live, nothing."""
    usual = strata({"old": 100.0}, 1.0)
    canary, stable = stratified(row({"new": (90, 12, 0), "monitor": (2, 0, 0)}),
                                row({"new": (10, 0, 0)}), usual)
    assert canary["weighed_requests"] == stable["weighed_requests"] == 0
    # 5 fresh keys beside the rotated app: nothing to promote on, however many they send
    flood = {f"fresh{n}": (100, 0, 0) for n in range(5)}
    canary, _ = stratified(row({"new": (100, 12, 0), **flood}), EMPTY, usual)
    assert canary["weighed_requests"] == 0
    # a silent history key (a nightly batch) lends the fresh keys nothing either
    canary, _ = stratified(row({"new": (30, 4, 0), "fresh": (150, 0, 0)}), EMPTY,
                           strata({"app": 30, "batch": 70}))
    assert canary["weighed_requests"] == 0
    # the usual keys live at their rate: the route's part, as before
    cheap, _ = stratified(row({"app": (30, 4, 0), "batch": (70, 0, 0), "fresh": (150, 0, 0)}),
                          EMPTY, strata({"app": 30, "batch": 70}))
    assert cheap["weighed_requests"] == pytest.approx(100 + NEW_KEYS_PART * 100)
    # only the app live: a tenth of what it counts (NEW_KEYS_PART x SLACK)
    cheap, _ = stratified(row({"app": (30, 4, 0), "fresh": (150, 0, 0)}), EMPTY,
                          strata({"app": 30, "batch": 70}))
    assert cheap["weighed_requests"] == pytest.approx(30 + NEW_KEYS_PART * SLACK * 30)


def test_the_pool_counts_the_largest_part_whole_and_the_rest_at_the_apps_rate() -> None:
    # one key's rows: in full
    assert pooled([(5, 200), (0, 80)]) == 5
    # keys hanging up as often as the app: about all of theirs
    assert pooled([(5, 200), (2, 80)]) == pytest.approx(7)
    # many small keys mostly hang-ups beside an app without any: the largest one's alone
    assert pooled([(0, 400)] + [(5, 6)] * 20) == 5
    assert pooled([]) == 0


def test_history_keys_missing_rows_no_longer_add_up() -> None:
    """r14k HIGH 1: 20 keys with a trickle of history (5 requests each beside the app's 2,400)
    counted each its full 5 once their allowances had grown (a day: 10 each): 100."""
    rates = {"app": 2400.0, **{f"k{n}": 5.0 for n in range(20)}}
    keys = {f"k{n}": (6.0, 0.0, 5.0) for n in range(20)}
    canary, _ = stratified(row({"app": (1200, 0, 0), **keys}),
                           row({"app": (1200, 0, 0), **{k: (6.0, 0.0, 0.0) for k in keys}}),
                           strata(rates, 2.0))
    assert canary["unstratified_missing"] == 100
    assert canary["opinions_missing_weighed"] == pytest.approx(5)




def test_history_keys_hang_ups_do_not_hold_a_clean_canary(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """r14k HIGH 1 on a real proxy: six keys each send 3 quick requests among the app's before
    the canary (so each is a history key), then, right after a 50% promotion, hang up and
    succeed in turn (a budget of 4 background opinions: most are skipped). On main each key's
    missing rows counted within its own growing allowance: 29 of 29 at 800 app requests, the
    clean canary undecided (held until `max_hours`). Now they make one pool: promoted."""
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY,
                          background_opinions_max=4, background_opinions_per_key=1,
                          hangup_probe_min_s=0.2)
    deployment = Deployment(proxy, tmp_path, percent=50, min_requests=50)
    app = deployment.client("app")
    keys = [deployment.admin.create_key(f"hanger{n}")["key"] for n in range(KEYS)]
    deployment.paced(app, 100)
    for key in keys:  # the history: a trickle from each key among the app's requests
        deployment.send(proxy.openai(api_key=key).with_options(max_retries=0), 3)
    deployment.paced(app, 20)
    deployment.open_canary()
    hang_up_from_many_keys(deployment, keys)
    promoted_despite_hang_ups(deployment, app, 1600, "history keys'", rounding=1e-6)
