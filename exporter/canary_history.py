"""The canary's baseline: the current target's traffic beside the canary, or, when that is
too thin to compare with, its traffic in the `history_hours` before the promotion.

That history had no canary, so no failure in it got a second opinion: a request that fails
on every model (a 5xx, a long generation cut by a timeout) read as the current target's
error there, while during the canary it is nobody's. An app key sending such requests before
a canary raised the baseline and got a bad canary promoted beside a clean current target
(r14 MED 4). So the history is read as the canary's rows are judged (the health's
`history_baseline`, storage/route_health.py): every failure there is unjudged and counted
apart (`opinions_missing`): an error status, a failure a fallback answered (r14c MED 5), and
a stream cut or stalled after its first byte, which any client can cause (r14c HIGH 2).
Whether they were the current target's errors is not known, so each decision takes a bound
(`bounded_sprt`): a rollback counts them as the current target's errors up to the rate at
which its own requests beside the canary show at most their errors with probability
`BLAME_LEVEL` (`blamed`, above the promotion's median); a promotion counts only the share of
them the canary would have answered (`credited`), estimated by `answer_share` from the second
opinions beside the canary.

Why not all of them for a rollback (r14d MED 4): 50 requests failing on every model before a
90% canary failing 10%, beside a current target failing none, raised the rollback's baseline
to 25%, and the canary stayed for a median 620 canary requests (a clean history: 50). The
current target's own requests beside the canary bound its rate. At 0.4 the canary goes at a
median 460, and good canaries (2-20% both arms, or 1% worse at 5-10%) were rolled back in at
most 2-3% of runs (20% both arms; 0-0.5% below), clean history or poisoned; at the median
(0.5) it went at 370 but 5% of good canaries at 20% were rolled back, at 0.6 at 290 and 11%
(`python bench/canary_history.py --levels 0 0.4 0.5 0.6`).

Why a share and not none (r14c MED 4): with none, the current target's own 5xx vanished from
the history while the canary's own 5xx (the current target answers them) were its errors, so
an honest canary as good as the current target waited 6-7x longer. The share comes from both
arms' 5xx and timeouts before any answer (those the history's `opinions_missing_unanswered`
are), each client key's share weighed by its judged requests (route_health.py): requests
failing everywhere lower it, failures only one model gives raise it, each key's as far as its
judged traffic goes. Cuts and stalls after the
first byte never get a second opinion, so none of them is credited: a history an app key
poisoned with them eases no promotion. Requests failing everywhere sent only before the canary
are still credited by a share the canary's own failures (the current target answers them) make
1: 30 of them beside 100 requests got a canary failing 12% promoted at 100 requests beside a
current target at 0 of 11. So the credit is cut to the rate at which the current target's own
requests beside the canary are as likely as not to show their few errors (`plausible_rate`,
0 of 11: 6%): an honest 3-5% is within it, a poisoned 23% is not. `history_doubt` still
refuses a history far above that (below `alpha`), and a bad canary is rolled back on the
concurrent traffic alone too (exporter/cycle_canary.py), so no poisoned history keeps it.

Why a doubt on top of the cut (h21, issue 14): at the first looks the current target has 10-20
requests of its own, so the median cut still let a poisoned history read 6-16% and a canary
failing 10% was promoted in 9% of runs beside a current target failing none, 29% beside one
failing 2% (clean history: 0-1%). Nothing is credited when the history's rate with the whole
share credited is one at which the current target's own requests would show at most their
errors with probability below `CREDIT_DOUBT` (0.3): then 0% and 2%, while honest good canaries
(2-11%, clean history) are promoted after the same median requests; a good canary beside a
poisoned history waits for the current target's own traffic (the safe side). A stricter cut
instead (level 0.75 or 0.9, or 20-30 requests before any credit) left 5-18% and held honest
canaries 1.2-4x longer (`python bench/canary_history.py --part promotion --credits ...`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from exporter.cycle_config import CanaryConfig
from exporter.intervals import binomial_cdf


@dataclass(frozen=True)
class Baseline:
    trials: float
    events: float
    unjudged: float
    """Failures no second opinion judged (history only): not in `trials` nor `events`."""
    kind: str
    credited: float = 0.0
    """Of `unjudged`, how many a promotion counts as the baseline's errors (the share the
    canary would have answered, `answer_share`)."""
    blamed: float = 0.0
    """Of `unjudged`, how many a rollback counts as the baseline's errors (`blamed`)."""


def starved(canary_n: float, baseline_n: float, floor: int) -> bool:
    """The current target's concurrent sample is too thin to compare with: fewer trials than
    the canary's and than `floor` (a sticky key sending all the traffic to the canary)."""
    return baseline_n < canary_n and baseline_n < max(floor, 1)


def weighed(row: dict[str, Any]) -> dict[str, Any]:
    """The error test's trials: requests weighed per sticky user (storage/route_health.py);
    a row without them (an older server) counts each request once."""
    return {**row, "trials": row.get("weighed_requests", row.get("requests", 0)),
            "failures": row.get("weighed_errors", row.get("errors", 0))}


def answer_share(canary: dict[str, Any], stable: dict[str, Any]) -> float:
    """Of the 5xx and timeouts either arm gave beside the canary, the share the other arm
    answered (each client key's weighed by its judged requests); 0 without any (nothing is
    credited)."""
    answered = canary.get("opinions_answered", 0) + stable.get("opinions_answered", 0)
    failed = canary.get("opinions_failed", 0) + stable.get("opinions_failed", 0)
    return answered / (answered + failed) if answered + failed > 0 else 0.0


PLAUSIBLE = 0.5
"""A credited history rate is at most the one at which the current target's own requests
beside the canary are at least as likely as not to show their few errors (the median
estimate): above it the credit is cut to it."""


def plausible_rate(stable: dict[str, Any], level: float = PLAUSIBLE) -> float:
    """The highest error rate at which the current target's concurrent (weighed) requests
    would show at most their errors with probability `level`; 0 without any requests."""
    n, x = round(stable.get("trials", 0)), math.floor(stable.get("failures", 0) + 1e-9)
    if n <= 0:
        return 0.0
    if x >= n:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if binomial_cdf(x, n, mid) >= level else (low, mid)
    return low


CREDIT_MIN_REQUESTS = 10
"""The current target's concurrent (weighed) requests below which nothing is credited: 0 of 4
makes 16% plausible, and a poisoned history credited that much got a canary failing 10%
promoted (r14d MED 4)."""


def credit(history: dict[str, Any], trials: str, events: str, answerable: float,
           share: float, stable: dict[str, Any], level: float = PLAUSIBLE,
           min_requests: float = CREDIT_MIN_REQUESTS, doubt: float = 0.0) -> float:
    """How many of the history's `answerable` failures a promotion counts as the current
    target's errors: the `share` the canary would have answered, cut so the history's rate
    stays at most `plausible_rate` (module doc: the poison it leaves no room for); none
    while the current target has fewer than `CREDIT_MIN_REQUESTS` requests of its own, nor
    when the history's rate with that whole share credited is above the one at which its own
    requests show at most their errors with probability `doubt` (h21: that history is not
    the current target's traffic, whatever of it the cut would keep)."""
    if stable.get("trials", 0) < min_requests:
        return 0.0
    n, x, rate = history.get(trials, 0), history.get(events, 0), plausible_rate(stable, level)
    full = answerable * share
    if doubt > 0 and full > 0 and (x + full) / (n + full) > plausible_rate(stable, doubt):
        return 0.0
    room = (rate * n - x) / (1 - rate) if rate < 1 else answerable
    return max(0.0, min(full, room))


BLAME_LEVEL = 0.4
"""A rollback counts the history's unjudged failures as the current target's errors only up
to the rate at which its own requests beside the canary show at most their errors with this
probability (`blamed`; the module doc says why this one)."""


def blamed(history: dict[str, Any], trials: str, events: str, unjudged: float,
           stable: dict[str, Any], level: float = BLAME_LEVEL) -> float:
    """How many of the history's `unjudged` failures a rollback counts as the current
    target's errors: all of them, cut so the history's rate stays at most `plausible_rate`
    at `level` (0: never cut); all of them while the current target has no requests of its
    own beside the canary."""
    if level <= 0 or stable.get("trials", 0) <= 0:
        return unjudged
    n, x, rate = history.get(trials, 0), history.get(events, 0), plausible_rate(stable, level)
    room = (rate * n - x) / (1 - rate) if rate < 1 else unjudged
    return max(0.0, min(unjudged, room))


CREDIT_DOUBT = 0.3
"""Nothing is credited when the current target's own requests beside the canary would show at
most their errors with a probability below this at the history's fully credited rate."""


@dataclass(frozen=True)
class HistoryLevels:
    """The history's bounds (the module doc says why these): `blame` for a rollback
    (`blamed`), `credit` and `credit_min_requests` for a promotion (`credit`)."""
    blame: float = BLAME_LEVEL
    credit: float = PLAUSIBLE
    credit_min_requests: float = CREDIT_MIN_REQUESTS
    credit_doubt: float = CREDIT_DOUBT


DEFAULT_LEVELS = HistoryLevels()


def baseline_of(canary: dict[str, Any], stable: dict[str, Any], history: dict[str, Any] | None,
                trials: str, events: str, floor: int, unjudged: str | None = None,
                levels: HistoryLevels = DEFAULT_LEVELS) -> Baseline:
    """The concurrent baseline, or the history when the concurrent one is starved and the
    history has more trials. `unjudged`: the history row's field of failures no second
    opinion judged (the error test's `opinions_missing`); of those a promotion credits the
    `answer_share` of the ones no answer had started (`opinions_missing_unanswered`)."""
    n_b, x_b = stable.get(trials, 0), stable.get(events, 0)
    if history is not None and starved(canary.get(trials, 0), n_b, floor) \
            and history.get(trials, 0) > n_b:
        if not unjudged:
            return Baseline(history[trials], history.get(events, 0), 0, "history")
        left_out = history.get(unjudged, 0)
        answerable = min(history.get("opinions_missing_unanswered", 0), left_out)
        return Baseline(history[trials], history.get(events, 0), left_out, "history",
                        credited=credit(history, trials, events, answerable,
                                        answer_share(canary, stable), stable, levels.credit,
                                        levels.credit_min_requests, levels.credit_doubt),
                        blamed=blamed(history, trials, events, left_out, stable, levels.blame))
    return Baseline(n_b, x_b, 0, "concurrent")


def needs_history(canary: dict[str, Any], stable: dict[str, Any], cfg: CanaryConfig) -> bool:
    canary, stable = weighed(canary), weighed(stable)
    return cfg.history_hours > 0 and (
        starved(canary["trials"], stable["trials"], cfg.min_requests)
        or starved(canary.get("votes", 0), stable.get("votes", 0), cfg.min_feedback))


def history_doubt(stable: dict[str, Any], base: Baseline, alpha: float) -> str | None:
    """Why a promotion is not made on the history baseline: the current target's own
    requests beside the canary (weighed) would be this few errors with probability below
    `alpha` were its error rate the history's. None when it is no history or plausible."""
    if base.kind != "history" or base.trials + base.credited <= 0:
        return None
    events, trials = base.events + base.credited, base.trials + base.credited
    rate = events / trials
    n, x = round(stable.get("trials", 0)), stable.get("failures", 0)
    p = binomial_cdf(math.floor(x + 1e-9), n, rate)
    if p >= alpha:
        return None
    return (f"no worse than the current target's traffic before the canary, but its error "
            f"rate there ({events:.4g}/{trials:.4g}, {rate:.3f}) is far above its own "
            f"beside the canary ({x:g}/{n:g}; that few errors at that rate: p = {p:.4f}, below "
            f"alpha {alpha:g}): not promoted on that history (rows an app key can send before "
            "a canary must not ease its promotion); it waits for the current target's own "
            "traffic")


def history_too_low(stable: dict[str, Any], base: Baseline, alpha: float) -> str | None:
    """Why a rollback is not made on the history baseline: the current target's own requests
    beside the canary (weighed) would be this many errors with probability below `alpha` were
    its error rate the history's, every unjudged failure there counted as its error (the bound
    a rollback uses). Requests an app key sends before a canary that never fail (a burst of
    one-token prompts) lowered the history's rate and got a good canary rolled back beside a
    current target failing as often as it (r14d MED 3); the concurrent rollback test still
    applies. None when it is no history or plausible."""
    if base.kind != "history" or base.trials + base.unjudged <= 0:
        return None
    events, trials = base.events + base.unjudged, base.trials + base.unjudged
    rate = events / trials
    n, x = round(stable.get("trials", 0)), math.floor(stable.get("failures", 0) + 1e-9)
    if x <= 0:
        return None
    p = 1.0 - binomial_cdf(x - 1, n, rate)  # at least x errors
    if p >= alpha:
        return None
    return (f"worse than the current target's traffic before the canary, but its error rate "
            f"there ({events:.4g}/{trials:.4g}, {rate:.3f}) is far below its own beside the "
            f"canary ({x:g}/{n:g}; that many errors at that rate: p = {p:.4f}, below alpha "
            f"{alpha:g}): not rolled back on that history (rows an app key can send before a "
            "canary must not roll it back); the comparison with the current target's own "
            "traffic decides")
