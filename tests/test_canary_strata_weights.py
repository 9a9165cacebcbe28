"""The canary's strata as numbers (exporter/canary_strata.py): no weight above 1, one key or
the anonymous client as sent, a key cut to its own allowance only, fresh keys sharing one,
and two honest apps decided about as soon as without strata."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from exporter.canary_bursts import BURST_CAP, usual_counts, usual_part
from exporter.canary_strata import (
    NEW_KEYS_PART,
    SLACK,
    Strata,
    history_seconds,
    strata_of,
    stratified,
)
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


EMPTY = row({})


def strata(rates: dict[str, float], elapsed_s: float = 1.0 / SLACK) -> Strata:
    """Rates per second over an elapsed time after which each key's allowance is its rate."""
    return Strata(rates, elapsed_s)


def test_the_weights_never_count_more_than_was_sent() -> None:
    """Every key's weight is at most 1; the anonymous client alone, or one key, is as sent."""
    usual = strata({"a": 70, "b": 30})
    alone = row({"a": (50, 5)})
    assert stratified(alone, EMPTY, usual) == (alone, EMPTY)
    assert stratified(row({"a": (50, 5), "b": (30, 0)}), EMPTY, None)[0]["weighed_requests"] \
        == 80
    for a, b in [(70, 30), (60, 40), (90, 10), (10, 90), (1, 200), (200, 1)]:
        cut, _ = stratified(row({"a": (a, a / 10), "b": (b, 0)}), EMPTY, usual)
        assert cut["weighed_requests"] <= a + b + 1e-9
        assert cut["weighed_errors"] <= a / 10 + 1e-9
    exact, _ = stratified(row({"a": (70, 7), "b": (30, 0)}), EMPTY, usual)
    assert exact["weighed_requests"] == 100 and exact["weighed_errors"] == 7


def test_a_key_over_its_allowance_is_cut_over_both_arms_and_cuts_nobody_else() -> None:
    usual = strata({"a": 70, "b": 30})
    canary, stable = stratified(row({"a": (60, 6), "b": (90, 0)}), row({"b": (30, 0)}), usual)
    # b: 120 trials against an allowance of 30, each arm its part; a in full
    assert canary["weighed_requests"] == pytest.approx(60 + 90 / 4)
    assert canary["weighed_errors"] == pytest.approx(6)
    assert stable["weighed_requests"] == pytest.approx(30 / 4)
    # a usual majority key sending 1 request shrinks nobody (r14e HIGH 1)
    held, _ = stratified(row({"a": (1, 0), "b": (30, 0)}), EMPTY, usual)
    assert held["weighed_requests"] == 31


def test_fresh_keys_share_one_allowance_never_a_silent_keys() -> None:
    """The fresh keys' one allowance: NEW_KEYS_PART of the route's rate, at most
    NEW_KEYS_PART x SLACK of what the live history keys count (r14l HIGH 1-2; before, the
    route's part alone: 10 + 5, 30 + 5 and 30 + 5 below)."""
    usual = strata({"app": 100})
    fresh = {f"k{n}": (1.0, 0.0) for n in range(200)}
    cut, _ = stratified(row({"app": (100, 1), **fresh}), EMPTY, usual)
    assert cut["weighed_requests"] == pytest.approx(100 + NEW_KEYS_PART * 100)
    cut, _ = stratified(row({"app": (10, 1), **fresh}), EMPTY, usual)
    assert cut["weighed_requests"] == pytest.approx(10 + NEW_KEYS_PART * SLACK * 10)
    # r14j HIGH 1: a silent history key's allowance (a nightly batch, the old key of a
    # rotation) is nobody's: a fresh key beside it gets the new keys' part alone
    rotated, _ = stratified(row({"new": (70, 0), "small": (30, 0)}), EMPTY,
                            strata({"old": 70, "small": 30}))
    assert rotated["weighed_requests"] == pytest.approx(30 + NEW_KEYS_PART * SLACK * 30)
    silent = strata({"app": 30, "batch": 70})
    cheap, _ = stratified(row({"app": (30, 4), "fresh": (150, 0)}), EMPTY, silent)
    assert cheap["weighed_requests"] == pytest.approx(30 + NEW_KEYS_PART * SLACK * 30)
    assert cheap["weighed_errors"] == 4
    # the rotated key alone over both arms: one key, nothing weighed
    alone = row({"new": (70, 0)})
    assert stratified(alone, EMPTY, strata({"old": 70})) == (alone, EMPTY)


def test_rates_read_each_judged_request_once() -> None:
    """r14j MED 2: the history's `judged` (each judged request once), not its `trials`
    (weighed per sticky user over the whole window); `trials` from an older server."""
    history = [{"by_key": {"app": {"trials": 300.0, "judged": 1200},
                           "monitor": {"trials": 20.0, "judged": 20}}}]
    assert strata_of(history, 60, 5) == Strata({"app": 20.0, "monitor": 20 / 60}, 5)
    older = [{"by_key": {"app": {"trials": 300.0}, "monitor": {"trials": 20.0}}}]
    assert strata_of(older, 60, 5) == Strata({"app": 5.0, "monitor": 20 / 60}, 5)
    # the canary's side stays weighed per user: 60 users' first 5 requests each
    found = strata({"app": 20.0, "monitor": 1 / 3}, 15.0)
    canary, _ = stratified(row({"app": (300, 0), "monitor": (5, 0)}), EMPTY, found)
    assert canary["weighed_requests"] == 305


def test_rates_come_from_keyed_judged_rows_over_the_history_s_span() -> None:
    history = [{"by_key": {"a": {"trials": 60.0, "traffic": 500.0}, "": {"trials": 900.0}},
                "first_at": "2026-01-01T10:00:00+00:00"},
               {"by_key": {"a": {"trials": 10.0}, "b": {"trials": 30.0}, "c": {"trials": 0}},
                "first_at": "2026-01-01T11:00:00+00:00"}]
    opened = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert history_seconds(history, opened, 24) == 7200
    assert history_seconds(history, opened, 1) == 3600
    assert history_seconds([{"by_key": {}}], opened, 1) == 3600
    found = strata_of(history, 100, 5)
    assert found == Strata({"a": 0.7, "b": 0.3}, 5)
    assert strata_of([{"by_key": {"": {"trials": 5.0}}}], 100, 5) is None


def looks(deployment: Deployment, clients: list[tuple[openai.OpenAI, int]], most: int
          ) -> dict[str, tuple[str, int]]:
    """Send the clients' batches (each its count a look) until `most`, judging each look
    with and without the strata (the same rows); the first decision of each and when."""
    since = deployment.state["promoted_at"]
    opened = datetime.fromisoformat(since)
    before = deployment.admin.route_health(
        ALIAS, since=(opened - timedelta(hours=24)).isoformat(), until=since,
        history_baseline=True, by_key=True)["targets"]
    history_s, cfg = history_seconds(before, opened, 24), deployment.cfg.canary
    decided: dict[str, tuple[str, int]] = {}
    sent = 0
    while sent < most and len(decided) < 2:
        for client, count in clients:
            deployment.paced(client, count)
            sent += count
        rows = {r["target"]: r for r in deployment.admin.route_health(
            ALIAS, since=since, by_key=True)["targets"]}
        elapsed_s = (datetime.now(UTC) - opened) / timedelta(seconds=1)
        for name, found in (("stratified", strata_of(before, history_s, elapsed_s)),
                            ("unstratified", None)):
            if name in decided:
                continue
            canary, stable = stratified(rows.get(CANARY, {}), rows.get(STABLE, {}), found)
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
    deployment.paced(big, 70)
    deployment.paced(small, 30)
    deployment.open_canary()
    deployment.proxy.upstream.state.model_error_rate[CANARY] = bad
    decided = looks(deployment, [(big, 7), (small, 3)], 400)
    assert decided["stratified"][0] == decided["unstratified"][0] == expected, decided
    assert decided["stratified"][1] <= decided["unstratified"][1] * 1.25 + 10, decided


def hourly(counts: dict[str, list[float]]) -> list[dict[str, Any]]:
    """A history health row from each key's judged requests per part of the window."""
    return [{"by_key": {key: {"trials": sum(parts), "judged": sum(parts),
                              "judged_parts": parts} for key, parts in counts.items()}}]


def test_a_burst_in_the_history_counts_as_a_few_usual_hours() -> None:
    """r14k MED 3: key c's 250 requests in one hour of the history (2.5 times the apps' day)
    made its rate 2.5 times theirs (on main); now that hour counts `BURST_CAP` of the route's
    median hour. The apps' flat hours are not cut, nor a session key's one hour."""
    app = [100 / 24] * 24
    history = hourly({"a": app, "c": [0.0] * 23 + [250.0], "": [1.0] * 24})
    found = strata_of(history, 24 * 3600, 3600)
    assert found is not None
    usual = 100 / 24 + 1  # the route's median hour (the rows without a key count there)
    assert found.rates["c"] * 24 * 3600 == pytest.approx(BURST_CAP * usual)
    assert found.rates["a"] * 24 * 3600 == pytest.approx(100)
    assert "" not in found.rates
    # on main: the whole count
    assert strata_of([{"by_key": {k: {"judged": v["judged"]} for k, v in
                                  history[0]["by_key"].items()}}],
                     24 * 3600, 3600).rates["c"] * 24 * 3600 == pytest.approx(250)
    session = hourly({"a": app, "s": [0.0] * 5 + [10.0] + [0.0] * 18})
    assert strata_of(session, 24 * 3600, 1).rates["s"] * 24 * 3600 == pytest.approx(10)


def test_many_keys_bursting_together_lift_no_usual_hour() -> None:
    """Twelve keys bursting 1,000 each in the same hour (keys are cheap) lift that hour, not
    the median: each counts `BURST_CAP` usual hours (with the mean of the hours each would
    keep all of it)."""
    counts = {"a": [100.0] * 24, **{f"c{n}": [0.0] * 23 + [1000.0] for n in range(12)}}
    allowed = usual_counts(hourly(counts))
    assert allowed is not None
    assert allowed["a"] == pytest.approx(2400)
    assert all(allowed[f"c{n}"] == pytest.approx(BURST_CAP * 100) for n in range(12))


def test_the_usual_hour_is_over_the_hours_the_route_was_active() -> None:
    """An app active 8 hours a day keeps its whole day (idle hours do not lower the median);
    a history without `judged_parts` (an older server) gives None: the whole counts."""
    office = [0.0] * 8 + [300.0] * 8 + [0.0] * 8
    assert usual_part([office]) == 300
    assert usual_part([]) == 0
    assert usual_counts(hourly({"a": office, "b": [x / 10 for x in office]})) == \
        pytest.approx({"a": 2400, "b": 240})
    assert usual_counts([{"by_key": {"a": {"judged": 5}}}]) is None
    assert usual_counts([{"by_key": {}}]) == {}
