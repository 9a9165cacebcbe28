"""The canary's history baseline at a 90% share (exporter/canary_history.py), each setting in
the same run: how a rollback's count of the history's unjudged failures (`blamed` at
`--levels`; 0: all of them) trades a good canary's false rollbacks against a bad one's delay,
and how a promotion's credit of them (`credit` at `--credits LEVEL:MIN_REQUESTS`, the first
the reference) trades a good canary's wait for its promotion against a bad one's promotions.

A simulated history: `HISTORY` requests of the current target, each failing with its error
rate; none had a second opinion, so every failure is unjudged. A poisoned one adds `POISON`
requests an app key sent that fail on every model (r14d MED 4). Then the canary: each request
goes to the canary with the share's chance and fails with its arm's rate; a failure is the
arm's error when the other arm answers its second opinion, nobody's when it fails too (as
storage/route_health.py judges them). The verdict (exporter/cycle_canary.py `judge_canary`) is
looked at every `--every` canary requests. Rollback part: a good canary is never stopped by a
promotion (the chance it is *ever* rolled back), a bad one stops at its first decision.
Promotion part: every canary stops at its first decision; a good one's canary requests to its
promotion (one never promoted by `--cap` counts as never), a bad one's promotions.

    python bench/canary_history.py [--runs 200] [--part both] [--levels 0 0.4 0.5]
                                   [--credits 0.5:10 0.75:10] [--every 10] [--cap 900]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from datetime import timedelta
from typing import Any

from exporter.canary_history import DEFAULT_LEVELS, HistoryLevels
from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig

HISTORY, POISON, SHARE = 150, 50, 0.9
CONFIG = CanaryConfig(percent=90)
GOOD = ((0.02, 0.02), (0.05, 0.05), (0.10, 0.10), (0.20, 0.20),
        (0.06, 0.05), (0.11, 0.10))  # the last two: + tolerance
BAD = ((0.10, 0.0), (0.10, 0.02), (0.30, 0.02))


def history(rate: float, poison: int, rng: random.Random) -> dict[str, Any]:
    failed = sum(rng.random() < rate for _ in range(HISTORY))
    return {"requests": HISTORY - failed, "errors": 0, "opinions_missing": failed + poison,
            "opinions_missing_unanswered": failed + poison}


def trial(canary: float, stable: float, poison: int, levels: HistoryLevels, seed: int, *,
          every: int, cap: int, stop_on_promotion: bool) -> tuple[str, int]:
    rng = random.Random(seed)
    past = history(stable, poison, rng)
    rates = (canary, stable)
    arms: list[dict[str, Any]] = [
        {"requests": 0, "errors": 0, "opinions_answered": 0, "opinions_failed": 0}
        for _ in rates]
    seen = 0
    while arms[0]["requests"] < cap:
        arm = 0 if rng.random() < SHARE else 1
        row = arms[arm]
        if rng.random() >= rates[arm]:
            row["requests"] += 1
        elif rng.random() >= rates[1 - arm]:  # the other arm answers: this arm's error
            row["requests"] += 1
            row["errors"] += 1
            row["opinions_answered"] += 1
        else:
            row["opinions_failed"] += 1
        if arm or arms[0]["requests"] - seen < every:
            continue
        seen = arms[0]["requests"]
        verdict = judge_canary(arms[0], arms[1], CONFIG, timedelta(hours=1), past,
                               levels=levels).verdict
        if verdict == "rollback" or (verdict == "promote" and stop_on_promotion):
            return verdict, seen
    return "continue", arms[0]["requests"]


def runs(canary: float, stable: float, poison: int, levels: HistoryLevels,
         args: argparse.Namespace, *, stop_on_promotion: bool) -> list[tuple[str, int]]:
    """`args.runs` seeded trials of one case at one setting."""
    return [trial(canary, stable, poison, levels, seed, every=args.every, cap=args.cap,
                  stop_on_promotion=stop_on_promotion) for seed in range(args.runs)]


def label(poison: int) -> str:
    return "poisoned" if poison else "clean"


def rollback_part(args: argparse.Namespace) -> None:
    settings = [HistoryLevels(blame=level) for level in args.levels]
    for canary, stable in GOOD:
        for poison in (0, POISON):
            rates = []
            for levels in settings:
                results = runs(canary, stable, poison, levels, args, stop_on_promotion=False)
                rates.append(sum(v == "rollback" for v, _ in results) / args.runs)
            shown = ", ".join(f"level {lv:g} {100 * r:.1f}%"
                              for lv, r in zip(args.levels, rates, strict=True))
            print(f"good {canary:.2f} vs {stable:.2f}, history {label(poison)}: false "
                  f"rollbacks {shown}")
    for canary, stable in BAD:
        for poison in (0, POISON):
            medians = []
            for levels in settings:
                results = runs(canary, stable, poison, levels, args, stop_on_promotion=True)
                sizes = sorted(n for v, n in results if v == "rollback")
                promoted = sum(v == "promote" for v, _ in results) / args.runs
                median = statistics.median(sizes) if sizes else float("nan")
                top = sizes[int(0.95 * (len(sizes) - 1))] if sizes else float("nan")
                medians.append(median)
                print(f"bad {canary:.2f} vs {stable:.2f}, history {label(poison)}, level "
                      f"{levels.blame:g}: rolled back {100 * len(sizes) / args.runs:.1f}%, "
                      f"promoted {100 * promoted:.1f}%; canary requests median {median:g}, "
                      f"95th {top:g}; ratio to level {args.levels[0]:g} "
                      f"{median / medians[0]:.2f}")


def credit_levels(text: str) -> HistoryLevels:
    level, least, doubt = [*text.split(":"), "", ""][:3]
    return HistoryLevels(credit=float(level), credit_min_requests=float(
        least or DEFAULT_LEVELS.credit_min_requests), credit_doubt=float(doubt or 0))


def name(levels: HistoryLevels) -> str:
    return f"credit {levels.credit:g}:{levels.credit_min_requests:g}:{levels.credit_doubt:g}"


def promotion_part(args: argparse.Namespace) -> None:
    settings: list[HistoryLevels] = args.credits
    reference = name(settings[0])
    for canary, stable in GOOD:
        for poison in (0, POISON):
            shown, first = [], math.nan
            for levels in settings:
                results = runs(canary, stable, poison, levels, args, stop_on_promotion=True)
                waits = sorted(n if v == "promote" else math.inf for v, n in results)
                median, ninetieth = statistics.median(waits), waits[int(0.9 * (args.runs - 1))]
                first = median if math.isnan(first) else first
                promoted = sum(v == "promote" for v, _ in results) / args.runs
                shown.append(f"{name(levels)} {median:g} (90th {ninetieth:g}, promoted "
                             f"{100 * promoted:.0f}%) x{median / first:.2f}")
            print(f"good {canary:.2f} vs {stable:.2f}, {label(poison)}: canary requests to "
                  f"promotion, median (x: ratio to {reference}): " + "; ".join(shown))
    for canary, stable in BAD:
        for poison in (0, POISON):
            rates = []
            for levels in settings:
                results = runs(canary, stable, poison, levels, args, stop_on_promotion=True)
                rates.append(sum(v == "promote" for v, _ in results) / args.runs)
            shown = [f"{name(levels)} {100 * rate:.1f}%"
                     + (f" x{rate / rates[0]:.2f}" if rates[0] else "")
                     for levels, rate in zip(settings, rates, strict=True)]
            print(f"bad {canary:.2f} vs {stable:.2f}, {label(poison)}: promoted "
                  + ", ".join(shown))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--part", choices=("rollback", "promotion", "both"), default="both")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.4, 0.5])
    parser.add_argument("--credits", type=credit_levels, nargs="+",
                        default=[credit_levels("0.5:10:0"), DEFAULT_LEVELS])
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--cap", type=int, default=900)
    args = parser.parse_args()
    print(f"share {SHARE}, history {HISTORY} requests (+{POISON} failing everywhere when "
          f"poisoned), alpha {CONFIG.alpha}, beta {CONFIG.beta}; {args.runs} runs each, a look "
          f"every {args.every} canary requests up to {args.cap}; blame level 0: every unjudged "
          "failure counted (before)")
    if args.part in ("rollback", "both"):
        rollback_part(args)
    if args.part in ("promotion", "both"):
        promotion_part(args)


if __name__ == "__main__":
    main()
