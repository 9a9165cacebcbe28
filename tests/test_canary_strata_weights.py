"""The canary's strata as numbers (exporter/canary_strata.py): no weight above 1, one key or
the anonymous client as sent, a new key at its small share, and two honest apps decided about
as soon as without strata."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from exporter.canary_strata import NEW_KEY_SHARE, shares_of, stratified
from exporter.cycle_canary import judge_canary, needs_history
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_canary_failures import CANARY, STABLE
from tests.test_canary_strata import Deployment
from tests.test_cycle import ALIAS


def row(keys: dict[str, tuple[float, float]]) -> dict[str, Any]:
    trials = sum(n for n, _ in keys.values())
    failures = sum(x for _, x in keys.values())
    return {"weighed_requests": trials, "weighed_errors": failures,
            "by_key": {k: {"trials": n, "failures": x, "traffic": n}
                       for k, (n, x) in keys.items()}}


def test_the_weights_never_count_more_than_was_sent() -> None:
    """Every key's weight is at most 1; the anonymous client alone, or one key, is as sent."""
    shares = {"a": 0.7, "b": 0.3}
    alone = row({"a": (50, 5)})
    assert stratified(alone, shares) is alone
    assert stratified(row({"a": (50, 5), "b": (30, 0)}), None)["weighed_requests"] == 80
    for a, b in [(70, 30), (60, 40), (90, 10), (10, 90), (1, 200), (200, 1)]:
        cut = stratified(row({"a": (a, a / 10), "b": (b, 0)}), shares)
        assert cut["weighed_requests"] <= a + b + 1e-9
        assert cut["weighed_errors"] <= a / 10 + 1e-9
    exact = stratified(row({"a": (70, 7), "b": (30, 0)}), shares)
    assert exact["weighed_requests"] == 100 and exact["weighed_errors"] == 7


def test_a_new_key_counts_its_small_share_and_a_thin_minority_key_holds_nothing() -> None:
    shares = {"app": 1.0}
    cut = stratified(row({"app": (10, 1), "burst": (150, 0)}), shares)
    app_share = 1 / (1 + NEW_KEY_SHARE)
    assert cut["weighed_requests"] == pytest.approx(10 / app_share)
    assert cut["weighed_errors"] == pytest.approx(1)
    # a key with 30% of the usual traffic sending 1 request: the app's 100 count in full
    held = stratified(row({"a": (100, 0), "b": (1, 0)}), {"a": 0.7, "b": 0.3})
    assert held["weighed_requests"] == 101


def test_shares_come_from_keyed_rows_only() -> None:
    history = [{"by_key": {"a": {"traffic": 60.0}, "": {"traffic": 900.0}}},
               {"by_key": {"a": {"traffic": 10.0}, "b": {"traffic": 30.0}}}]
    assert shares_of(history) == {"a": 0.7, "b": 0.3}
    assert shares_of([{"by_key": {"": {"traffic": 5.0}}}]) is None


def looks(deployment: Deployment, clients: list[tuple[openai.OpenAI, int]], most: int
          ) -> dict[str, tuple[str, int]]:
    """Send the clients' batches (each its count a look) until `most`, judging each look
    with and without the strata (the same rows); the first decision of each and when."""
    since = deployment.state["promoted_at"]
    opened = datetime.fromisoformat(since)
    before = deployment.admin.route_health(
        ALIAS, since=(opened - timedelta(hours=24)).isoformat(), until=since,
        history_baseline=True, by_key=True)["targets"]
    shares, cfg = shares_of(before), deployment.cfg.canary
    decided: dict[str, tuple[str, int]] = {}
    sent = 0
    while sent < most and len(decided) < 2:
        for client, count in clients:
            deployment.send(client, count)
            sent += count
        rows = {r["target"]: r for r in deployment.admin.route_health(
            ALIAS, since=since, by_key=True)["targets"]}
        for name, strata in (("stratified", shares), ("unstratified", None)):
            if name in decided:
                continue
            canary, stable = (stratified(rows.get(m, {}), strata) for m in (CANARY, STABLE))
            history = {r["target"]: r for r in before}[STABLE] \
                if needs_history(canary, stable, cfg) else None
            verdict = judge_canary(canary, stable, cfg, datetime.now(UTC) - opened, history)
            if verdict.verdict != "continue":
                decided[name] = (verdict.verdict, sent)
    print(f"\n{deployment.cfg.canary.percent:g}% canary, keys 70/30: {decided}")
    return decided


@pytest.mark.parametrize("percent", [90, 50])
@pytest.mark.parametrize(("bad", "expected"), [(0.12, "rollback"), (0.0, "promote")])
def test_two_honest_apps_are_decided_about_as_soon_as_without_strata(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path, bad: float,
        expected: str, percent: int) -> None:
    """Two apps at 70/30 before and during the canary: their keys are at their shares, so the
    strata cost (almost) nothing: the same verdict within a look or two."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path, percent=percent)
    big, small = deployment.client("big"), deployment.client("small")
    deployment.send(big, 70)
    deployment.send(small, 30)
    deployment.open_canary()
    deployment.proxy.upstream.state.model_error_rate[CANARY] = bad
    decided = looks(deployment, [(big, 7), (small, 3)], 400)
    assert decided["stratified"][0] == decided["unstratified"][0] == expected, decided
    assert decided["stratified"][1] <= decided["unstratified"][1] * 1.25 + 10, decided
