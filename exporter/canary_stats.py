"""The canary verdict: a two-sample sequential probability ratio test (SPRT), per metric.

Each canary request is a Bernoulli trial per metric: an *error* (see storage/route_health.py)
or, among the requests users rated, a *thumbs-down*. The canary's rate `p_c` is compared with
the current (baseline) target's rate `p_b` on the same alias since the promotion:

    H0: p_c = p_b + tolerance      (no worse than we accept)
    H1: p_c = p_b + bad            (worse by an amount that matters; bad > tolerance)

`p_b` is not known: it is a nuisance parameter estimated from the same data, so the test
uses the *profile* likelihood of both arms. Under each hypothesis the baseline rate `q` that
makes the two arms' counts most likely is found,

    l_d = max_q  x_b ln q + (n_b - x_b) ln(1 - q) + x_c ln(q + d) + (n_c - x_c) ln(1 - q - d),

and LLR = l_bad - l_tolerance. For counts this is, to first order, the SPRT of the difference
of the two rates with its true variance p(1-p)(1/n_c + 1/n_b) (with a fixed canary share it is
a random walk), where treating `p_b` as known would use p(1-p)/n_c and, at a 50% share,
halve the variance and roll back within-tolerance canaries far more often than `alpha`.

Boundaries: LLR >= ln(1 / alpha) decides *worse* (roll back); LLR <= ln(beta / (1 - alpha))
decides *not worse* (promotable); in between the test continues. Looking often: for a simple
likelihood ratio (known `p_b`) the ratio is a martingale under H0 and Ville's inequality
bounds the chance it ever reaches 1/alpha by alpha, however often it is looked at. The
profile likelihood ratio used here is not a martingale, so that proof does not carry over;
what is shown is by simulation (r14g, with errors at alpha / 2 and a look every 1 to 10
requests): canaries at the edge of tolerance were rolled back within 5,000 requests in 0 to
1.3% of runs (claimed at most 2.5%) at shares 0.1, 0.5 and 0.9 and base rates 0 to 0.30, and
canaries exactly at the bad level were promoted in 8.8 to 16.1% of runs (beta 0.2). Outside
what was simulated, the error rates are not guaranteed. The verdict runs two tests
(errors, thumbs-down), so its rollback risk `alpha` is split between them (Bonferroni):
exporter/cycle_canary.py gives each alpha / 2. `python bench/canary_sprt.py` prints the
false-rollback rates at 10% and 50% canary shares and how soon a bad canary goes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Decision = Literal["worse", "not_worse", "continue"]
Verdict = Literal["rollback", "promote", "continue"]
_EDGE = 1e-9
_SEARCH_STEPS = 48


@dataclass(frozen=True)
class SprtParams:
    alpha: float
    beta: float
    tolerance: float
    bad: float

    @property
    def upper(self) -> float:
        return math.log(1 / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha))


@dataclass(frozen=True)
class SprtResult:
    metric: str
    canary_n: float
    canary_events: float
    baseline_n: float
    baseline_events: float
    p0: float
    p1: float
    llr: float
    llr_bad: float
    lower: float
    upper: float
    decision: Decision
    baseline: str = "concurrent"
    """`concurrent`: the current target's traffic since the promotion; `history`: its traffic
    before the promotion, used when the concurrent baseline is starved (cycle_canary.py)."""
    baseline_unjudged: float = 0.0
    """The baseline's failures no second opinion judged (its history, exporter/canary_history.py):
    counted as its errors for a rollback (`llr`); for a promotion (`llr_bad`) only the
    `baseline_credited` of them, already in `baseline_n` and `baseline_events`."""
    baseline_credited: float = 0.0
    baseline_blamed: float | None = None
    """Of `baseline_unjudged`, how many the rollback's `llr` counts (None: all of them)."""
    note: str = ""
    """Why the decision is not the one the LLRs alone give (exporter/cycle_canary.py)."""

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        rate = self.canary_events / self.canary_n if self.canary_n else 0.0
        base = self.baseline_events / self.baseline_n if self.baseline_n else 0.0
        before = " before the canary" if self.baseline == "history" else ""
        if self.baseline_unjudged:
            m, c = self.baseline_unjudged, self.baseline_credited
            b = m if self.baseline_blamed is None else self.baseline_blamed
            n, x = self.baseline_n - c, self.baseline_events - c
            upper = (x + b) / (n + b)
            counted = "all" if b >= m else f"{b:.4g} of the"
            before += (f" (with {c:.4g} of its {m:g} failures there no second opinion judged, "
                       f"the share the canary's second opinions answer; {counted} {m:g} counted "
                       f"as its errors only for a rollback, {x + b:.4g}/{n + b:.4g} "
                       f"({upper:.3f}))" if c else
                       f" (and {m:g} failures there no second opinion judged: {counted} {m:g} "
                       f"counted as its errors only for a rollback, {x + b:.4g}/{n + b:.4g} "
                       f"({upper:.3f}))")
        return (f"{self.metric} {self.canary_events:g}/{self.canary_n:g} ({rate:.3f}) against "
                f"{self.baseline_events:.4g}/{self.baseline_n:.4g} ({base:.3f}){before}: LLR worse "
                f"{self.llr:+.2f} (rolls back at {self.upper:.2f}), LLR bad {self.llr_bad:+.2f} "
                f"(no worse at {self.lower:.2f}) -> {self.decision}"
                + (f": {self.note}" if self.note else ""))


def _xlog(x: float, p: float) -> float:
    return 0.0 if x == 0 else x * math.log(max(p, _EDGE))


def _loglik(q: float, d: float, n_c: float, x_c: float, n_b: float, x_b: float) -> float:
    return (_xlog(x_b, q) + _xlog(n_b - x_b, 1 - q)
            + _xlog(x_c, q + d) + _xlog(n_c - x_c, 1 - q - d))


def _slope(q: float, d: float, n_c: float, x_c: float, n_b: float, x_b: float) -> float:
    return (x_b / q - (n_b - x_b) / (1 - q) + x_c / (q + d) - (n_c - x_c) / (1 - q - d))


def profile(d: float, n_c: float, x_c: float, n_b: float, x_b: float) -> tuple[float, float]:
    """The baseline rate q in [0, 1 - d] that makes both arms' counts most likely when the
    canary's rate is q + d, and that log-likelihood. The log-likelihood is concave in q, so
    its slope falls: bisection finds where it crosses 0 (or the end it is best at)."""
    lo, hi = _EDGE, 1.0 - d - _EDGE
    if hi <= lo or _slope(lo, d, n_c, x_c, n_b, x_b) <= 0:
        q = lo if hi > lo else max(1.0 - d, 0.0)
    elif _slope(hi, d, n_c, x_c, n_b, x_b) >= 0:
        q = hi
    else:
        for _ in range(_SEARCH_STEPS):
            mid = (lo + hi) / 2
            if _slope(mid, d, n_c, x_c, n_b, x_b) > 0:
                lo = mid
            else:
                hi = mid
        q = (lo + hi) / 2
    return q, _loglik(q, d, n_c, x_c, n_b, x_b)


def sprt(metric: str, canary_n: float, canary_events: float, baseline_n: float,
         baseline_events: float, params: SprtParams, baseline: str = "concurrent"
         ) -> SprtResult:
    """The two-sample SPRT of the canary's event rate against the baseline's (module doc).
    Counts may be fractional (feedback weighed per voter, storage/route_health.py)."""
    if not 0 <= canary_events <= canary_n or not 0 <= baseline_events <= baseline_n:
        raise ValueError("event counts must lie between 0 and the number of trials")
    counts = (canary_n, canary_events, baseline_n, baseline_events)
    q0, l0 = profile(params.tolerance, *counts)
    q1, l1 = profile(params.bad, *counts)
    llr_bad = l1 - l0
    # worse: the mixture over the alternatives bad, 2 bad, 4 bad, ... (equal weights), so a
    # far worse canary goes sooner than the point alternative `bad` alone would let it
    ratios = [llr_bad] + [profile(d, *counts)[1] - l0 for d in _alternatives(params.bad)[1:]]
    top = max(ratios)
    llr = top + math.log(sum(math.exp(r - top) for r in ratios) / len(ratios))
    decision: Decision = "continue"
    if llr >= params.upper:
        decision = "worse"
    elif llr_bad <= params.lower:
        decision = "not_worse"
    return SprtResult(metric, canary_n, canary_events, baseline_n, baseline_events,
                      q0 + params.tolerance, q1 + params.bad, llr, llr_bad, params.lower,
                      params.upper, decision, baseline)


def bounded_sprt(metric: str, canary_n: float, canary_events: float, baseline_n: float,
                 baseline_events: float, unjudged: float, params: SprtParams,
                 baseline: str = "concurrent", credited: float = 0.0,
                 blamed: float | None = None) -> SprtResult:
    """`sprt` against a baseline with `unjudged` failures that may or may not be its errors
    (no second opinion judged them): *worse* only against the baseline counting `blamed` of
    them as its errors (None: all of them; exporter/canary_history.py: as many as the current
    target's own requests beside the canary make plausible), *not worse* only against the
    baseline counting `credited` of them (the share the canary would have answered; 0:
    none)."""
    credited = min(max(credited, 0.0), max(unjudged, 0.0))
    counted = unjudged if blamed is None else min(max(blamed, 0.0), unjudged)
    low = sprt(metric, canary_n, canary_events, baseline_n + credited,
               baseline_events + credited, params, baseline)
    if unjudged <= 0:
        return low
    high = sprt(metric, canary_n, canary_events, baseline_n + counted,
                baseline_events + counted, params, baseline)
    decision: Decision = "continue"
    if high.decision == "worse":
        decision = "worse"
    elif low.decision == "not_worse":
        decision = "not_worse"
    return dataclasses.replace(low, p1=high.p1, llr=high.llr, decision=decision,
                               baseline_unjudged=unjudged, baseline_credited=credited,
                               baseline_blamed=None if blamed is None else counted)


def _alternatives(bad: float) -> list[float]:
    return [bad] + [bad * 2 ** k for k in range(1, 6) if bad * 2 ** k < 1]


@dataclass(frozen=True)
class CanaryVerdict:
    verdict: Verdict
    tests: tuple[SprtResult, ...]
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "test": "sprt2",
                "tests": [t.to_json() for t in self.tests], "reasons": list(self.reasons)}


def canary_verdict(tests: list[SprtResult], *, feedback_counted: bool,
                   canary_requests: float, min_requests: int, old_enough: bool,
                   expired: str | None = None, held: str | None = None,
                   rollback_only: tuple[SprtResult, ...] = ()) -> CanaryVerdict:
    """Roll back as soon as any test finds the canary worse; promote when every test that
    counts finds it no worse and the canary has `min_requests` (judged requests, each client
    key's within its allowance: exporter/canary_strata.py `counted`; the tests themselves weigh
    them per sticky user) and its minimum age; else
    keep watching, unless the canary is past its maximum age (`expired` says why): then an
    undecided canary is rolled back, the safe side. The thumbs-down test counts only when
    `feedback_counted`. `held`: why a canary every test finds no worse is not promoted yet
    (its missing background second opinions, counted as errors, would change that).
    `rollback_only`: tests whose *worse* rolls back but that need not find it no worse."""
    counted = [t for t in tests if t.metric != "thumbs_down" or feedback_counted]
    worse = [t for t in (*counted, *rollback_only) if t.decision == "worse"]
    tests = [*tests, *rollback_only]
    if worse:
        return CanaryVerdict("rollback", tuple(tests), tuple(t.describe() for t in worse))
    if all(t.decision == "not_worse" for t in counted):
        if held is not None:
            pending = [held]
        elif canary_requests >= min_requests and old_enough:
            return CanaryVerdict("promote", tuple(tests), tuple(t.describe() for t in counted))
        else:
            counted_requests = f"{round(canary_requests, 2):.10g}"
            why = (f"no worse, but {counted_requests} of {min_requests} requests (judged, a "
                   "sticky user's at most 4 x max_requests_per_user, each client key's within "
                   "its usual rate)" if canary_requests < min_requests
                   else "no worse, but not old enough yet")
            pending = [why]
    else:
        pending = [t.describe() for t in counted if t.decision == "continue"]
    if expired is not None:
        return CanaryVerdict("rollback", tuple(tests), (expired, *pending))
    return CanaryVerdict("continue", tuple(tests), tuple(pending))
