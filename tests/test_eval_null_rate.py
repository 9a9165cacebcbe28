"""A candidate no better than the baseline is promoted at most 2.5% of the time (the lower
bound of a two-sided 95% interval), also for a continuous user scorer at small n, where the
percentile bootstrap let one through 5.4% of the time at n = 10 (r14g #5). A seeded
simulation through the report and the gate: deterministic, not timed. Figures for more n:
bench/eval_null_rates.py."""

from __future__ import annotations

import numpy as np

from exporter.eval_cases import EvalCase
from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import Answer, Stats, build_report, make_scoring

RUNS = 3000
N = 10


def as_number(prediction: str, reference: str) -> float:
    """A user scorer (`tests.test_eval_null_rate:as_number`): the answer is its score."""
    return float(prediction)


def test_a_no_better_candidate_passes_at_most_the_nominal_rate() -> None:
    rng = np.random.default_rng(20261201)
    cases = [EvalCase(i, [{"role": "user", "content": f"q{i}"}], f"q{i}", "")
             for i in range(1, N + 1)]
    scoring = make_scoring("tests.test_eval_null_rate:as_number", 0.5, None, {})
    models = {"candidate": "c", "baseline": "b"}
    rules = GateRules()
    passed = 0
    for _ in range(RUNS):
        # both models' scores from one distribution: every promotion is a false one
        answers = {role: [Answer(repr(float(v)), None, None) for v in rng.beta(0.5, 0.5, N)]
                   for role in models}
        report = build_report("ev", "d", cases, answers, models, scoring, 0,
                              Stats(resamples=200))
        passed += gate_decision(report, rules).passed
    # 2.5% nominal; 3000 runs give a standard error of 0.29%: 3.3% is 2.8 of them above
    assert passed / RUNS <= 0.033, f"{passed} of {RUNS} no-better candidates promoted"
