"""A rollback on the canary's history baseline (exporter/canary_history.py `blamed`): the
history's failures no second opinion judged count as the current target's errors only up to
the rate its own requests beside the canary make plausible, so requests an app key sent
before a canary, failing on every model, do not keep a bad canary at 90% (r14d MED 4)."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig

AGE = timedelta(hours=1)
CFG = CanaryConfig(percent=90)
POISONED = {"requests": 150, "errors": 0, "opinions_missing": 50,
            "opinions_missing_unanswered": 50}


def arm(requests: int, errors: int) -> dict[str, Any]:
    return {"requests": requests, "errors": errors, "opinions_answered": errors,
            "opinions_failed": 0}


def first_rollback(canary_rate: float, history: dict[str, Any]) -> int | None:
    """The canary requests at which a 90% canary failing `canary_rate` beside a current
    target failing none (a ninth of the canary's requests) is rolled back, looked at every
    10 canary requests until the current target's own 100 requests end the history."""
    for requests in range(10, 900, 10):
        verdict = judge_canary(arm(requests, round(canary_rate * requests)),
                               arm(requests // 9, 0), CFG, AGE, history)
        if verdict.verdict == "rollback":
            return requests
    return None


def good_canary_rolled_back(rate: float, seed: int) -> bool:
    """A 90% canary failing as often as the current target (each failure its arm's error when
    the other arm answers it), after a history of 150 of the current target's requests and
    the 50 poisoned ones; looked at every 10 canary requests, never stopped by a promotion."""
    rng = random.Random(seed)
    failed = sum(rng.random() < rate for _ in range(150))
    history = {"requests": 150 - failed, "errors": 0, "opinions_missing": failed + 50,
               "opinions_missing_unanswered": failed + 50}
    rows = [arm(0, 0), arm(0, 0)]
    while rows[0]["requests"] < 900:
        row = rows[0] if rng.random() < CFG.percent / 100 else rows[1]
        if rng.random() >= rate:
            row["requests"] += 1
        elif rng.random() >= rate:  # the other arm answered: this arm's error
            row["requests"] += 1
            row["errors"] += 1
            row["opinions_answered"] += 1
        else:  # both failed: nobody's
            row["opinions_failed"] += 1
        if row is rows[0] and row["requests"] % 10 == 0 and judge_canary(
                rows[0], rows[1], CFG, AGE, history).verdict == "rollback":
            return True
    return False


def test_a_poisoned_history_neither_keeps_a_bad_canary_nor_rolls_back_a_good_one() -> None:
    """r14d MED 4: 50 requests failing on every model before a 90% canary failing 10% beside a
    current target failing none: counted in full (50/200) they kept it until 620 canary
    requests (a clean history: 50). Counted up to the rate at which the current target's
    own requests beside it show their errors with probability 0.4 (0 of 58: 1.6%) it goes at
    530: the bound is where the error test (alpha / 4) crosses against the history's 150
    requests at that rate. Good canaries beside such a history (5% both arms, 20 seeds up to
    900 canary requests) are not rolled back."""
    assert first_rollback(0.10, POISONED) <= 530
    assert first_rollback(0.10, {**POISONED, "opinions_missing": 0,
                                 "opinions_missing_unanswered": 0}) <= 60
    assert not any(good_canary_rolled_back(0.05, seed) for seed in range(20))


def test_the_rollback_says_how_many_of_the_historys_unjudged_failures_it_counts() -> None:
    """0 of 22 of the current target's own beside the canary: at most that few with
    probability 0.4 at 4.1%, so of the history's 50 unjudged failures 6.4 are counted
    (6.4/156.4); beside none of its own, all 50 (nothing bounds them)."""
    verdict = judge_canary(arm(200, 20), arm(22, 0), CFG, AGE, POISONED)
    errors = verdict.tests[0]
    assert errors.baseline == "history" and errors.baseline_unjudged == 50
    assert errors.baseline_blamed is not None
    assert abs(errors.baseline_blamed - 150 * (1 - 0.4 ** (1 / 22)) / 0.4 ** (1 / 22)) < 0.01
    assert "6.379 of the 50 counted as its errors only for a rollback" in errors.describe()
    alone = judge_canary(arm(20, 2), arm(0, 0), CFG, AGE, POISONED).tests[0]
    assert alone.baseline_blamed == 50
