"""What the evaluation report's confidence intervals cost and how well they cover.

1. Time of the bootstrap (2,000 resamples, both models, every metric) for validation sets of
   several sizes, by scorer kind (mean score, binary classification, 5-class classification).
2. False promotions of the judge gate: a coin-flip judge (no real difference) over many
   simulated evaluations, and how often the gate would promote: with the old rule (Wilson
   interval of wins over decided pairs, lower bound above 0.5) and with the gate of
   exporter/eval_gate.py (exact Clopper-Pearson on the decided pairs, margin over judged
   pairs with ties as half, min_decided). Small evaluations show the difference most.
3. The winner's curse: the best of K coin-flip checkpoints, chosen on the same pairs, is
   promoted how often, with and without Bonferroni's 1 - 0.05/K.
4. A judge that refuses to judge the candidate's unsafe answers (a content filter's 400) on
   9% of 1,000 pairs, the candidate winning 55% of the rest (501 wins vs 499 not won): how
   often the gate promotes it with those pairs as losses (exporter/judge.py), and as they
   counted before r14e #6 (errors left out of the win rate, up to max_error_share).

    python bench/eval_intervals.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import random
import time

from exporter.eval_cases import EvalCase
from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import Answer, EvalReport, build_report, make_scoring
from exporter.intervals import bonferroni, wilson
from exporter.judge import pairwise_summary

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


def coin_outcomes(rng: random.Random, pairs: int) -> list[str]:
    """A coin-flip judge's outcomes: both orders flip; a side wins when they agree."""
    out = []
    for _ in range(pairs):
        first, second = rng.random() < 0.5, rng.random() < 0.5
        out.append("candidate" if first and second else
                   "baseline" if not first and not second else "tie")
    return out


def gated(outcomes: list[str], confidence: float) -> bool:
    """Whether the gate of exporter/eval_gate.py would promote on these outcomes."""
    judgements = [{"outcome": o, "how": "judged", "orders": []} for o in outcomes]
    pairwise = pairwise_summary(judgements, confidence)
    low, high = pairwise["interval"]
    report = EvalReport("ev", "d", len(outcomes), "judge", "win_rate", None, {}, 0.0, [], 0,
                        confidence, [2 * low - 1, 2 * high - 1], None, pairwise)
    return gate_decision(report, GateRules()).passed


def coin_judge(pairs: int, runs: int) -> tuple[float, float, float]:
    """(share of runs whose Wilson interval covers 0.5, share the old Wilson rule would
    promote, share the gate promotes)."""
    rng = random.Random(0)
    covered = old = new = 0
    for _ in range(runs):
        outcomes = coin_outcomes(rng, pairs)
        wins, losses = outcomes.count("candidate"), outcomes.count("baseline")
        low, high = wilson(wins, wins + losses)
        covered += low <= 0.5 <= high
        old += low > 0.5
        new += gated(outcomes, 0.95)
    return covered / runs, old / runs, new / runs


def best_of(k: int, pairs: int, runs: int) -> tuple[float, float]:
    """Share of runs where the best of k coin-flip checkpoints passes the gate: at 95% each,
    and at Bonferroni's 1 - 0.05/k."""
    rng = random.Random(1)
    plain = corrected = 0
    for _ in range(runs):
        every = [coin_outcomes(rng, pairs) for _ in range(k)]
        best = max(every, key=lambda o: o.count("candidate") - o.count("baseline"))
        plain += gated(best, 0.95)
        corrected += gated(best, bonferroni(0.95, k))
    return plain / runs, corrected / runs


def refusing_judge(runs: int, pairs: int = 1000, unsafe: float = 0.09,
                   p_win: float = 0.55) -> tuple[float, float]:
    """(share of runs the gate promotes, share it would promote with the refused pairs left
    out of the win rate as errors) for a candidate whose unsafe answers the judge refuses."""
    rng = random.Random(2)
    now = left_out = 0
    for _ in range(runs):
        refused, judged = [], []
        for _ in range(pairs):
            if rng.random() < unsafe:
                refused.append("refused")
            else:
                judged.append("candidate" if rng.random() < p_win else "baseline")
        base = [{"outcome": o, "how": "judged", "orders": []} for o in judged]
        for how, outcome in (("judge_failed", "baseline"), ("both_failed", "error")):
            judgements = base + [{"outcome": outcome, "how": how, "orders": []}
                                 for _ in refused]
            pairwise = pairwise_summary(judgements, 0.95)
            low, high = pairwise["interval"]
            report = EvalReport("ev", "d", pairs, "judge", "win_rate", None, {}, 0.0, [], 0,
                                0.95, [2 * low - 1, 2 * high - 1], None, pairwise)
            passed = gate_decision(report, GateRules(margin=0.02)).passed
            if how == "judge_failed":
                now += passed
            else:
                left_out += passed
    return now / runs, left_out / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    print("bootstrap of a report (2,000 resamples, both models, every metric):")
    for n in (100, 1_000, 10_000):
        row = ", ".join(f"{kind} {timing(n, kind) * 1000:7.1f} ms" for kind in MANIFESTS)
        print(f"  {n:>6} examples: {row}")
    print(f"coin-flip judge, {args.runs} simulated evaluations each:")
    for pairs in (12, 20, 100, 500):
        covered, old, new = coin_judge(pairs, args.runs)
        print(f"  {pairs:>4} pairs: the Wilson interval covers 0.5 in {covered:.1%}; the old "
              f"Wilson rule would promote {old:.1%}, the gate promotes {new:.1%}")
    print(f"best of K coin-flip checkpoints on the same 100 pairs, {args.runs // 4} runs each:")
    for k in (3, 5):
        plain, corrected = best_of(k, 100, args.runs // 4)
        print(f"  K = {k}: promoted {plain:.1%} at 95% each, {corrected:.1%} with "
              f"Bonferroni (1 - 0.05/{k})")
    runs = max(args.runs // 10, 1)
    now, left_out = refusing_judge(runs)
    print(f"a judge refusing the candidate's unsafe answers (9% of 1,000 pairs, 55% of the "
          f"rest won; margin 0.02), {runs} runs: promoted {now:.1%} with refusals as losses; "
          f"{left_out:.1%} with them left out as errors (before r14e #6)")


if __name__ == "__main__":
    main()
