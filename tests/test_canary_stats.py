"""The canary's two-sample sequential test (exporter/canary_stats.py): its risk of rolling
back an even canary stays within alpha even when the canary has half the traffic (the
baseline's rate is estimated, not known), and the two tests share alpha."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pytest

from exporter.canary_stats import SprtParams, sprt
from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig, parse_cycle_config
from tuneloop.errors import ConfigError

AGE = timedelta(hours=7)  # old enough (min_age_minutes), below max_hours


def health(requests: int, errors: int, rated: float = 0, down: float = 0) -> dict[str, Any]:
    return {"requests": requests, "errors": errors, "votes": rated,
            "down_votes": down}


def rolled_back(canary: float, baseline: float, share: float, seed: int, cfg: CanaryConfig,
                every: int = 5, cap: int = 300) -> bool:
    """One simulated canary, looked at every `every` canary requests as the watcher does;
    True when the verdict rolls it back."""
    rng = random.Random(seed)
    n = x = nb = xb = 0
    while n < cap:
        if rng.random() < share:
            n, x = n + 1, x + (rng.random() < canary)
            if n % every:
                continue
            verdict = judge_canary(health(n, x), health(nb, xb), cfg, AGE).verdict
            if verdict != "continue":
                return verdict == "rollback"
        else:
            nb, xb = nb + 1, xb + (rng.random() < baseline)
    return False


def test_an_even_canary_with_half_the_traffic_is_rolled_back_at_most_alpha_of_the_time(
) -> None:
    """10% errors in both arms at a 50% share: the test that took the baseline's rate as
    known rolled back about 1 in 9 of these (bench/canary_sprt.py)."""
    cfg = CanaryConfig(percent=50, min_requests=1)
    runs = 200
    false_rollbacks = sum(rolled_back(0.10, 0.10, 0.5, seed, cfg) for seed in range(runs))
    assert false_rollbacks / runs <= cfg.alpha


def test_a_canary_failing_30_percent_still_goes_within_100_requests() -> None:
    cfg = CanaryConfig(percent=50, min_requests=100)
    assert all(rolled_back(0.30, 0.02, 0.5, seed, cfg, every=10, cap=100)
               for seed in range(20))


def test_the_two_tests_share_alpha() -> None:
    cfg = CanaryConfig(alpha=0.05, min_requests=1, min_feedback=5)
    verdict = judge_canary(health(60, 0, 10, 1), health(540, 0, 80, 4), cfg, AGE)
    assert [t.upper for t in verdict.tests] == [pytest.approx(math.log(2 / 0.05))] * 2


def test_the_baseline_sample_counts() -> None:
    """The same canary counts against a baseline rate measured on few or on many requests:
    the fewer, the less sure the test is that the canary is worse."""
    params = SprtParams(alpha=0.025, beta=0.2, tolerance=0.01, bad=0.05)
    few = sprt("errors", 100, 15, 100, 5, params)
    many = sprt("errors", 100, 15, 10_000, 500, params)
    assert few.llr < many.llr
    assert few.decision == "continue" and many.decision == "worse"


def test_a_starved_baseline_is_replaced_by_its_history() -> None:
    """All the traffic on the canary (a constant sticky key): against no concurrent baseline
    even 200 errors in 200 requests proved nothing (LLR 0); against the current target's
    traffic before the promotion they do."""
    cfg = CanaryConfig(percent=10, min_requests=100)
    broken, idle, before = health(200, 200), health(0, 0), health(300, 3)
    assert judge_canary(broken, idle, cfg, timedelta(hours=1)).verdict == "continue"
    verdict = judge_canary(broken, idle, cfg, timedelta(hours=1), before)
    assert verdict.verdict == "rollback"
    assert verdict.tests[0].baseline == "history" and verdict.tests[0].baseline_n == 300
    assert "before the canary" in verdict.reasons[0]
    fed = judge_canary(health(200, 2), health(1800, 18), cfg, AGE, health(300, 150))
    assert fed.tests[0].baseline == "concurrent"  # history only when starved


def test_one_user_flooding_cheap_successes_cannot_dilute_a_failing_canary() -> None:
    """20 errors in 100 honest canary requests against 9 in 900; an app key adds 2,000
    successful requests with one canary-bound user id: counted one by one they made the
    canary look no worse (promoted); weighed per user they weigh 5."""
    cfg = CanaryConfig(percent=10, min_requests=100)
    canary = {**health(2100, 20), "weighed_requests": 105, "weighed_errors": 20}
    stable = {**health(900, 9), "weighed_requests": 900, "weighed_errors": 9}
    verdict = judge_canary(canary, stable, cfg, AGE)
    assert verdict.verdict == "rollback", verdict.reasons
    assert verdict.tests[0].canary_n == 105


def test_one_heavy_sticky_user_cannot_make_up_min_requests() -> None:
    """60 honest canary users (one clean request each) and one user sending 240 more: 300
    requests, but the error test weighs that user at `max_requests_per_user` (5), and
    `min_requests` (100) counts it at 4 x that (`counted_requests`, storage/route_health.py:
    r14m MED 3, users that come back make up the minimum, no one user alone): counted raw, the
    one user made up the minimum and the canary was promoted on 65 requests' worth of
    evidence."""
    cfg = CanaryConfig(percent=10, min_requests=100)
    canary = {**health(300, 0), "weighed_requests": 65, "weighed_errors": 0,
              "counted_requests": 80}
    stable = {**health(900, 0), "weighed_requests": 900, "weighed_errors": 0}
    verdict = judge_canary(canary, stable, cfg, AGE)
    assert verdict.verdict == "continue", verdict.reasons
    assert verdict.reasons == ("no worse, but 80 of 100 requests (judged, a sticky user's at "
                               "most 4 x max_requests_per_user, each client key's within its "
                               "usual rate)",)
    honest = {**health(100, 0), "weighed_requests": 100, "weighed_errors": 0}
    assert judge_canary(honest, stable, cfg, AGE).verdict == "promote"


def test_a_minimum_age_past_max_hours_is_refused() -> None:
    """A canary that must wait longer than it may live would always be rolled back."""
    with pytest.raises(ConfigError, match=r"min_age_minutes \(1440\) must be below max_hours "
                                          r"\(24\).*could never be promoted"):
        parse_cycle_config({"name": "c", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "m"},
                            "canary": {"min_age_minutes": 1440, "max_hours": 24}})
