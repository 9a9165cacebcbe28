"""The judge's gate with a margin above 0 holds its error rate: a candidate exactly at the
margin passes at most 2.5% of the time (r14g #6: 3.3% when the decided share was taken as
fixed). Exact: every outcome of the trinomial is enumerated with its probability and sent
through the report and the gate (no simulation, nothing timed)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from exporter.eval_cases import EvalCase
from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import Answer, EvalReport, Stats, build_report, make_scoring
from exporter.judge import pairwise_summary
from exporter.margin_test import margin_p_value

MODELS = {"candidate": "ft:m", "baseline": "base"}


def judged_report(wins: int, losses: int, ties: int) -> EvalReport:
    outcomes = ["candidate"] * wins + ["baseline"] * losses + ["tie"] * ties
    judgements: list[dict[str, Any]] = [
        {"line": 1, "source_id": None, "reference": False, "orders": [], "outcome": o,
         "how": "judged"} for o in outcomes]
    n = len(judgements)
    cases = [EvalCase(i, [{"role": "user", "content": f"q{i}"}], f"q{i}", f"a{i}")
             for i in range(1, n + 1)]
    answers = {role: [Answer(f"{role} {i}", None, None) for i in range(n)] for role in MODELS}
    stats = Stats()
    pairwise = {"judge": "j", "rubric": "r", **pairwise_summary(judgements, stats.each)}
    return build_report("ev_j", "d", cases, answers, MODELS, make_scoring("judge", 0.5, None, {}),
                        5, stats, pairwise, judgements)


def trinomial(n: int, win: float, loss: float, w: int, lost: int) -> float:
    tie = 1 - win - loss
    terms = [(w, win), (lost, loss), (n - w - lost, tie)]
    if any(count and share == 0 for count, share in terms):
        return 0.0
    return math.exp(math.lgamma(n + 1) + sum(count * math.log(share) - math.lgamma(count + 1)
                                             for count, share in terms if count or share))


def pass_rate(n: int, win: float, loss: float, margin: float) -> float:
    """P(the gate passes) when P(win) − P(loss) is exactly `margin`, over every outcome that
    could pass (wins − losses at least margin × n) and is not negligible."""
    rate = 0.0
    for w in range(n + 1):
        for lost in range(n + 1 - w):
            if w - lost < margin * n:
                continue
            chance = trinomial(n, win, loss, w, lost)
            if chance < 1e-9:
                continue
            if gate_decision(judged_report(w, lost, n - w - lost),
                             GateRules(margin=margin, min_decided=0)).passed:
                rate += chance
    return rate


def test_a_candidate_exactly_at_the_margin_with_no_losses_passes_at_most_2_5_percent() -> None:
    # r14g #6: 200 pairs, true margin 0.06, no losses; it passed 3.3% of the time
    assert pass_rate(200, 0.06, 0.0, 0.06) <= 0.025


def test_with_losses_too_the_rate_stays_below_2_5_percent() -> None:
    assert pass_rate(25, 0.5, 0.3, 0.2) <= 0.025


def test_a_clear_winner_still_passes_a_margin() -> None:
    report = judged_report(wins=18, losses=2, ties=5)
    decision = gate_decision(report, GateRules(margin=0.2))
    assert decision.passed, decision.reasons


def test_a_lucky_run_of_wins_among_many_ties_is_refused_with_the_reason() -> None:
    # 20 wins, no loss, 180 ties: margin 0.1; the sign test's bound (share fixed) said 0.066
    report = judged_report(wins=20, losses=0, ties=180)
    assert report.margin_lower is not None and report.margin_lower > 0.06
    decision = gate_decision(report, GateRules(margin=0.06))
    assert not decision.passed
    assert any("share of decided pairs as uncertain" in reason and "20 wins" in reason
               for reason in decision.reasons), decision.reasons
    # at margin 0 only the sign test decides, as before
    assert gate_decision(report, GateRules(margin=0.0)).passed


def test_the_p_value_rises_with_the_margin_asked() -> None:
    values = [margin_p_value(30, 5, 65, m) for m in (0.0, 0.1, 0.2, 0.25, 0.4)]
    assert values == sorted(values) and values[0] < 0.01 and values[-1] > 0.5
    assert margin_p_value(0, 0, 0, 0.1) == 1.0


@pytest.mark.parametrize("counts", [(5, 0, 0), (0, 5, 0), (0, 0, 5)])
def test_extreme_counts_give_a_p_value_in_range(counts: tuple[int, int, int]) -> None:
    assert 0.0 <= margin_p_value(*counts, 0.1) <= 1.0
