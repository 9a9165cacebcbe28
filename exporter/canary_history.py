"""The canary's baseline: the current target's traffic beside the canary, or, when that is
too thin to compare with, its traffic in the `history_hours` before the promotion.

That history had no canary, so no failure in it got a second opinion: a request that fails
on every model (a 5xx, a long generation cut by a timeout) read as the current target's
error there, while during the canary it is nobody's. An app key sending such requests before
a canary raised the baseline and got a bad canary promoted beside a clean current target
(r14 MED 4). So the history is read as the canary's rows are judged (the health's
`history_baseline`, storage/route_health.py): those failures are unjudged and counted apart
(`opinions_missing`). Whether they were the current target's errors is not known, so each
decision takes the bound least favourable to it (`bounded_sprt`): a promotion compares with
the history without them, a rollback with every one of them counted as the current target's
error. Rows an app key can write before the canary then ease neither.

What the history still counts (a stream failing after its first byte, a stall after it)
an app key may also send on purpose. So a canary is not promoted on a history whose error
rate the current target's own requests beside the canary make implausible
(`history_doubt`); it waits until the current target has traffic enough of its own.
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


def starved(canary_n: float, baseline_n: float, floor: int) -> bool:
    """The current target's concurrent sample is too thin to compare with: fewer trials than
    the canary's and than `floor` (a sticky key sending all the traffic to the canary)."""
    return baseline_n < canary_n and baseline_n < max(floor, 1)


def weighed(row: dict[str, Any]) -> dict[str, Any]:
    """The error test's trials: requests weighed per sticky user (storage/route_health.py);
    a row without them (an older server) counts each request once."""
    return {**row, "trials": row.get("weighed_requests", row.get("requests", 0)),
            "failures": row.get("weighed_errors", row.get("errors", 0))}


def baseline_of(canary: dict[str, Any], stable: dict[str, Any], history: dict[str, Any] | None,
                trials: str, events: str, floor: int, unjudged: str | None = None) -> Baseline:
    """The concurrent baseline, or the history when the concurrent one is starved and the
    history has more trials. `unjudged`: the history row's field of failures no second
    opinion judged (the error test's `opinions_missing`)."""
    n_b, x_b = stable.get(trials, 0), stable.get(events, 0)
    if history is not None and starved(canary.get(trials, 0), n_b, floor) \
            and history.get(trials, 0) > n_b:
        left_out = history.get(unjudged, 0) if unjudged else 0
        return Baseline(history[trials], history.get(events, 0), left_out, "history")
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
    if base.kind != "history" or base.trials <= 0:
        return None
    rate = base.events / base.trials
    n, x = round(stable.get("trials", 0)), stable.get("failures", 0)
    p = binomial_cdf(math.floor(x + 1e-9), n, rate)
    if p >= alpha:
        return None
    return (f"no worse than the current target's traffic before the canary, but its error "
            f"rate there ({base.events:g}/{base.trials:g}, {rate:.3f}) is far above its own "
            f"beside the canary ({x:g}/{n:g}; that few errors at that rate: p = {p:.4f}, below "
            f"alpha {alpha:g}): not promoted on that history (rows an app key can send before "
            "a canary must not ease its promotion); it waits for the current target's own "
            "traffic")

