"""What the evaluation report's confidence intervals cost and how well they cover.

1. Time of the bootstrap (2,000 resamples, both models, every metric) for validation sets of
   several sizes, by scorer kind (mean score, binary classification, 5-class classification).
2. Coverage of the judge's Wilson interval and the false promotions of the gate: a coin-flip
   judge (no real difference) over many simulated evaluations; how often the gate (win
   rate's lower bound above 0.5) would promote.

    python bench/eval_intervals.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import random
import time

from exporter.eval_cases import EvalCase
from exporter.eval_report import Answer, build_report, make_scoring
from exporter.intervals import wilson

MANIFESTS = {
    "exact": ("exact", {}),
    "binary": ("classification", {"classification": {"labels": {"yes": 1, "no": 1},
                                                      "positive_class": "yes"}}),
    "5-class": ("classification", {"classification": {"labels": dict.fromkeys("abcde", 1)}}),
}


def timing(n: int, kind: str) -> float:
    rng = random.Random(n)
    spec, manifest = MANIFESTS[kind]
    labels = list((manifest.get("classification") or {}).get("labels") or ["x", "y"])
    cases = [EvalCase(i, [], "", rng.choice(labels)) for i in range(1, n + 1)]
    answers = {role: [Answer(rng.choice(labels), None, None) for _ in cases]
               for role in ("candidate", "baseline")}
    scoring = make_scoring(spec, 0.5, None, manifest)
    started = time.perf_counter()
    build_report("ev", "d", cases, answers, {"candidate": "c", "baseline": "b"}, scoring, 20)
    return time.perf_counter() - started


def coin_judge(pairs: int, runs: int) -> tuple[float, float]:
    """(share of runs whose interval covers 0.5, share the gate would promote)."""
    rng = random.Random(0)
    covered = promoted = 0
    for _ in range(runs):
        wins = losses = 0
        for _ in range(pairs):  # both orders flip a coin; a side wins when they agree
            first, second = rng.random() < 0.5, rng.random() < 0.5
            if first and second:
                wins += 1
            elif not first and not second:
                losses += 1
        low, high = wilson(wins, wins + losses)
        covered += low <= 0.5 <= high
        promoted += low > 0.5
    return covered / runs, promoted / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    print("bootstrap of a report (2,000 resamples, both models, every metric):")
    for n in (100, 1_000, 10_000):
        row = ", ".join(f"{kind} {timing(n, kind) * 1000:7.1f} ms" for kind in MANIFESTS)
        print(f"  {n:>6} examples: {row}")
    print(f"coin-flip judge, {args.runs} simulated evaluations each:")
    for pairs in (20, 100, 500):
        covered, promoted = coin_judge(pairs, args.runs)
        print(f"  {pairs:>4} pairs: the 95% interval covers 0.5 in {covered:.1%}; "
              f"the gate would promote {promoted:.1%}")


if __name__ == "__main__":
    main()
