"""What the canary's strata (exporter/canary_strata.py) cost honest deployments and what they
stop, with and without them on the same simulated traffic (the error test at alpha / 2, the
concurrent baseline, `min_requests` 100 for a promotion, as exporter/cycle_canary.py runs it).

Two app keys at 70/30 before the canary (100 requests, one a second); during it one request a
second, each request's key drawn at the given mix, each key's requests err at its own rate per
arm (each key's allowance is its own usual rate: one a second times its history share, times
the elapsed seconds, times SLACK). Scenarios:

- even: both arms alike (keys erring 0% / 10%), never stopped by "no worse": the chance an
  even canary is ever rolled back (false rollbacks, alpha 2.5% for this test), at the usual mix
  and with the mix shifted to 50/50 during the canary;
- bad: the canary fails 12% of both keys' requests (stable 0%): canary requests to rollback;
- good: both 0%: canary requests to promotion;
- burst: as `bad`, but a third key sends 150 cheap requests (never failing) right after the
  promotion: promoted (the bug) or rolled back; and 200 fresh keys one cheap request each.

    python bench/canary_strata.py [--runs 200] [--shares 0.9 0.5] [--every 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

from exporter.canary_stats import SprtParams, sprt
from exporter.canary_strata import strata_of, stratified

ERRORS = SprtParams(0.025, 0.2, 0.01, 0.05)
MIN_REQUESTS = 100
HISTORY = [{"by_key": {"a": {"trials": 70.0}, "b": {"trials": 30.0}}}]
HISTORY_S = 100.0


def arm_row(counts: dict[str, list[int]]) -> dict[str, Any]:
    return {"weighed_requests": sum(n for n, _ in counts.values()),
            "weighed_errors": sum(x for _, x in counts.values()),
            "by_key": {k: {"trials": n, "failures": x} for k, (n, x) in counts.items()}}


def trial(seed: int, share: float, mix: float, rates: dict[str, tuple[float, float]],
          strata: bool, every: int, cap: int, stop_no_worse: bool, burst: int = 0,
          burst_keys: int = 1) -> tuple[str, int]:
    rng = random.Random(seed)
    arms: list[dict[str, list[int]]] = [{}, {}]
    for n in range(burst):  # never fails
        key = f"cheap{n % burst_keys}"
        arms[0 if rng.random() < share else 1].setdefault(key, [0, 0])[0] += 1
    sent = 0
    while sent < cap:
        key = "a" if rng.random() < mix else "b"
        arm = 0 if rng.random() < share else 1
        counts = arms[arm].setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += rng.random() < rates[key][arm]
        sent += 1
        if sent % every:
            continue
        found = strata_of(HISTORY, HISTORY_S, float(sent)) if strata else None
        canary, stable = stratified(arm_row(arms[0]), arm_row(arms[1]), found)
        test = sprt("errors", canary["weighed_requests"], canary["weighed_errors"],
                    stable["weighed_requests"], stable["weighed_errors"], ERRORS)
        if test.decision == "worse":
            return "rollback", sent
        if stop_no_worse and test.decision == "not_worse" \
                and canary["weighed_requests"] >= MIN_REQUESTS:
            return "promote", sent
    return "continue", sent


def summary(results: list[tuple[str, int]], runs: int) -> str:
    parts = []
    for verdict in ("rollback", "promote"):
        sizes = sorted(n for d, n in results if d == verdict)
        if sizes or verdict == "rollback":
            median = f" (app requests median {statistics.median(sizes):g})" if sizes else ""
            parts.append(f"{verdict} {100 * len(sizes) / runs:.1f}%{median}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.9, 0.5])
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--cap", type=int, default=1000)
    args = parser.parse_args()
    print(f"keys a/b at 70/30 before the canary; {args.runs} runs each, a look every "
          f"{args.every} requests, up to {args.cap}; without strata -> with strata")
    even = {"a": (0.0, 0.0), "b": (0.10, 0.10)}
    scenarios = [("even, mix 70/30", 0.7, even, False, 0, 1),
                 ("even, mix 50/50", 0.5, even, False, 0, 1),
                 ("bad 12% vs 0%", 0.7, {"a": (0.12, 0.0), "b": (0.12, 0.0)}, True, 0, 1),
                 ("good 0% vs 0%", 0.7, {"a": (0.0, 0.0), "b": (0.0, 0.0)}, True, 0, 1),
                 ("bad + cheap burst 150", 0.7, {"a": (0.12, 0.0), "b": (0.12, 0.0)}, True,
                  150, 1),
                 ("bad + 200 fresh keys' burst", 0.7, {"a": (0.12, 0.0), "b": (0.12, 0.0)},
                  True, 200, 200)]
    for share in args.shares:
        for name, mix, rates, stop, burst, burst_keys in scenarios:
            line = []
            for strata in (False, True):
                results = [trial(seed, share, mix, rates, strata, args.every, args.cap, stop,
                                 burst, burst_keys) for seed in range(args.runs)]
                line.append(summary(results, args.runs))
            print(f"share {share:.1f}, {name}: {line[0]} -> {line[1]}")


if __name__ == "__main__":
    main()
