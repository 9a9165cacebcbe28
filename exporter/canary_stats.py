"""The canary verdict: Wald's sequential probability ratio test (SPRT), per metric.

Each canary request is a Bernoulli trial per metric: an *error* (see storage/route_health.py)
or, among the requests users rated, a *thumbs-down* (mean feedback score below 0). With
`p_b` the current (baseline) target's rate on the same alias since the promotion, the test is

    H0: p_canary = p_b + tolerance      (no worse than we accept)
    H1: p_canary = p_b + bad            (worse by an amount that matters; bad > tolerance)

and its log-likelihood ratio over the canary's `n` trials with `x` events is

    LLR = x * ln(p1 / p0) + (n - x) * ln((1 - p1) / (1 - p0)).

Wald's boundaries for error probabilities `alpha` (rolling back a canary that is within
tolerance) and `beta` (keeping a canary that is `bad` worse): LLR >= ln((1 - beta) / alpha)
decides *worse* (roll back), LLR <= ln(beta / (1 - alpha)) decides *not worse* (promotable),
in between the test continues. `p_b` is estimated from the baseline's own trials with half an
event of smoothing, (x_b + 0.5) / (n_b + 1), so a baseline without errors yet is not taken
for a perfect one; the baseline gets (100 - canary%)/canary% times the canary's traffic, so
its estimate settles first. The LLR is recomputed from the counts at every look; looking
every few seconds instead of after every request only makes the test stop a little later.

A clearly bad canary (30% errors against ~0%) crosses the upper boundary after a few errors;
a clean canary against a clean baseline reaches the lower one after about
ln((1 - alpha) / beta) / -ln((1 - p1) / (1 - p0)) requests (about 40 with the defaults).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Decision = Literal["worse", "not_worse", "continue"]
Verdict = Literal["rollback", "promote", "continue"]
_EDGE = 1e-6


@dataclass(frozen=True)
class SprtParams:
    alpha: float
    beta: float
    tolerance: float
    bad: float

    @property
    def upper(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha))


@dataclass(frozen=True)
class SprtResult:
    metric: str
    canary_n: int
    canary_events: int
    baseline_n: int
    baseline_events: int
    p0: float
    p1: float
    llr: float
    lower: float
    upper: float
    decision: Decision

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        rate = self.canary_events / self.canary_n if self.canary_n else 0.0
        base = self.baseline_events / self.baseline_n if self.baseline_n else 0.0
        return (f"{self.metric} {self.canary_events}/{self.canary_n} ({rate:.3f}) against "
                f"{self.baseline_events}/{self.baseline_n} ({base:.3f}): LLR {self.llr:+.2f} "
                f"in [{self.lower:.2f}, {self.upper:.2f}] -> {self.decision}")


def sprt(metric: str, canary_n: int, canary_events: int, baseline_n: int,
         baseline_events: int, params: SprtParams) -> SprtResult:
    """Wald's SPRT of the canary's event rate against the baseline's (see the module doc)."""
    if not 0 <= canary_events <= canary_n or not 0 <= baseline_events <= baseline_n:
        raise ValueError("event counts must lie between 0 and the number of trials")
    p_b = (baseline_events + 0.5) / (baseline_n + 1)
    p0 = min(max(p_b + params.tolerance, _EDGE), 1 - 2 * _EDGE)
    p1 = min(max(p_b + params.bad, p0 + _EDGE), 1 - _EDGE)
    llr = (canary_events * math.log(p1 / p0)
           + (canary_n - canary_events) * math.log((1 - p1) / (1 - p0)))
    decision: Decision = "continue"
    if llr >= params.upper:
        decision = "worse"
    elif llr <= params.lower:
        decision = "not_worse"
    return SprtResult(metric, canary_n, canary_events, baseline_n, baseline_events, p0, p1,
                      llr, params.lower, params.upper, decision)


@dataclass(frozen=True)
class CanaryVerdict:
    verdict: Verdict
    tests: tuple[SprtResult, ...]
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "test": "sprt",
                "tests": [t.to_json() for t in self.tests], "reasons": list(self.reasons)}


def canary_verdict(tests: list[SprtResult], *, feedback_counted: bool, canary_requests: int,
                   min_requests: int, old_enough: bool) -> CanaryVerdict:
    """Roll back as soon as any test finds the canary worse; promote when every test that
    counts finds it no worse and the canary has `min_requests` and its minimum age; else
    keep watching. The thumbs-down test counts only when `feedback_counted`."""
    counted = [t for t in tests if t.metric != "thumbs_down" or feedback_counted]
    worse = [t for t in counted if t.decision == "worse"]
    if worse:
        return CanaryVerdict("rollback", tuple(tests), tuple(t.describe() for t in worse))
    if all(t.decision == "not_worse" for t in counted):
        if canary_requests >= min_requests and old_enough:
            return CanaryVerdict("promote", tuple(tests), tuple(t.describe() for t in counted))
        why = (f"no worse, but {canary_requests} of {min_requests} requests"
               if canary_requests < min_requests else "no worse, but not old enough yet")
        return CanaryVerdict("continue", tuple(tests), (why,))
    pending = [t.describe() for t in counted if t.decision == "continue"]
    return CanaryVerdict("continue", tuple(tests), tuple(pending))
