"""The promotion gate's statistics (exporter/eval_gate.py), on reports built from given
answers and judgements: the exact Clopper-Pearson interval against published values, the
judge's win rate with ties as half, failures as errors capped by max_error_share, the minimum
of decided pairs and of discordant examples, the exact McNemar test and Bonferroni over K."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.cycle_config import EvaluateConfig, parse_cycle_config
from exporter.cycle_steps import gate_passes
from exporter.eval_cases import EvalCase
from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import Answer, EvalReport, Stats, build_report, make_scoring
from exporter.intervals import bonferroni, clopper_pearson
from exporter.judge import pairwise_summary, settled
from tuneloop.errors import ConfigError

MODELS = {"candidate": "ft:m", "baseline": "base"}


def cases(n: int) -> list[EvalCase]:
    return [EvalCase(i, [{"role": "user", "content": f"q{i}"}], f"q{i}", f"a{i}")
            for i in range(1, n + 1)]


def judgement(outcome: str, how: str = "judged") -> dict[str, Any]:
    return {"line": 1, "source_id": None, "reference": False, "orders": [],
            "outcome": outcome, "how": how}


def judged_report(wins: int, losses: int, ties: int, errors: int = 0,
                  comparisons: int = 1) -> EvalReport:
    judgements = ([judgement("candidate")] * wins + [judgement("baseline")] * losses
                  + [judgement("tie")] * ties + [judgement("error", "baseline_failed")] * errors)
    n = len(judgements)
    answers = {role: [Answer(f"{role} {i}", None, None) for i in range(n)] for role in MODELS}
    stats = Stats(comparisons=comparisons)
    pairwise = {"judge": "j", "rubric": "r", **pairwise_summary(judgements, stats.each)}
    return build_report("ev_j", "d", cases(n), answers, MODELS,
                        make_scoring("judge", 0.5, None, {}), 5, stats, pairwise, judgements)


def test_clopper_pearson_matches_published_values() -> None:
    # exact intervals (e.g. R's binom.test): 5/10 -> [0.1871, 0.8129]; 8/10 -> [0.4439, 0.9748]
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert clopper_pearson(8, 10) == pytest.approx((0.443905, 0.974790), abs=1e-6)
    assert clopper_pearson(4, 4)[0] == pytest.approx(0.025 ** (1 / 4))  # closed form at k = n
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    assert clopper_pearson(3000, 2800 + 3000)[0] > 0.5  # large n stays finite
    assert bonferroni(0.95, 3) == pytest.approx(1 - 0.05 / 3) and bonferroni(0.95, 1) == 0.95


def test_four_wins_no_loss_and_many_ties_does_not_pass_the_judge_gate() -> None:
    report = judged_report(wins=4, losses=0, ties=20)
    assert report.pairwise is not None
    # ties count as half a win, over all 24 judged pairs
    assert report.pairwise["win_rate"] == pytest.approx((4 + 10) / 24)
    assert report.margin == pytest.approx(4 / 24)
    decision = gate_decision(report, GateRules())
    assert not decision.passed and not gate_passes(report, EvaluateConfig())
    assert report.margin_lower is not None and report.margin_lower < 0  # exact: 4-0 is p=.125
    assert any("4 decided pairs" in reason for reason in decision.reasons)
    # even without a minimum of decided pairs, the exact test refuses it
    assert not gate_decision(report, GateRules(min_decided=0)).passed
    assert "over 24 judged pairs, ties as half" in report.render()


def test_a_clear_judged_winner_passes() -> None:
    report = judged_report(wins=18, losses=2, ties=5)
    decision = gate_decision(report, GateRules(margin=0.2))
    assert decision.passed, decision.reasons
    assert report.margin == pytest.approx(16 / 25)
    low, _ = clopper_pearson(18, 20)
    assert report.margin_lower == pytest.approx(20 / 25 * (2 * low - 1))


def test_a_failure_is_never_a_win() -> None:
    ok, failed = Answer("fine", None, None), Answer(None, "400 bad", None)
    assert settled(ok, failed) == ("error", "baseline_failed")
    assert settled(failed, ok) == ("baseline", "candidate_failed")  # a loss
    assert settled(failed, failed) == ("error", "both_failed")
    report = judged_report(wins=20, losses=0, ties=0, errors=3)  # 3 of 23 pairs: 13%
    assert report.pairwise is not None
    assert report.pairwise["errors"] == 3 and report.pairwise["wins"] == 20
    assert report.pairwise["errors_by_kind"]["baseline_failed"] == 3
    decision = gate_decision(report, GateRules())
    assert not decision.passed
    assert decision.reasons == ["3 of 23 pairs are errors or failed judgements "
                                "(13.0% > max_error_share 10.0%)"]
    assert "3 errors (baseline_failed 3)" in report.render()
    assert gate_decision(report, GateRules(max_error_share=0.2)).passed


def bootstrap_report(better: int, worse: int, same: int, failed_baseline: int = 0,
                     comparisons: int = 1) -> EvalReport:
    n = better + worse + same + failed_baseline
    all_cases = cases(n)
    candidate, baseline = [], []
    for i, case in enumerate(all_cases):
        right, wrong = Answer(case.reference, None, None), Answer("no", None, None)
        if i < better:
            candidate.append(right)
            baseline.append(wrong)
        elif i < better + worse:
            candidate.append(wrong)
            baseline.append(right)
        elif i < better + worse + same:
            candidate.append(right)
            baseline.append(right)
        else:
            candidate.append(right)
            baseline.append(Answer(None, "500", None))
    return build_report("ev_b", "d", all_cases, {"candidate": candidate, "baseline": baseline},
                        MODELS, make_scoring("exact", 0.5, None, {}), 5,
                        Stats(comparisons=comparisons))


def test_a_bootstrap_on_few_discordant_examples_does_not_pass() -> None:
    report = bootstrap_report(better=4, worse=0, same=96)
    assert report.paired is not None and report.paired["discordant"] == 4
    assert report.margin_lower is not None and report.margin_lower > 0  # the bootstrap alone
    decision = gate_decision(report, GateRules())
    assert not decision.passed
    assert any("only 4 discordant examples" in r for r in decision.reasons)
    assert any("exact McNemar" in r for r in decision.reasons)  # p = 0.125
    assert not gate_decision(report, GateRules(min_discordant=0)).passed
    clear = bootstrap_report(better=30, worse=3, same=67)
    assert gate_decision(clear, GateRules()).passed
    assert clear.paired is not None and clear.paired["p_value"] < 1e-5
    assert "paired    33 discordant examples (candidate better on 30" in clear.render()


def test_a_failing_baseline_is_no_evidence_for_the_candidate() -> None:
    report = bootstrap_report(better=10, worse=0, same=60, failed_baseline=30)
    assert report.paired is not None and report.paired["failed"] == 30
    decision = gate_decision(report, GateRules())
    assert not decision.passed
    assert any("30 of 100 examples have a failed request" in r for r in decision.reasons)


def test_the_best_of_k_is_judged_at_bonferronis_level() -> None:
    one = judged_report(wins=9, losses=1, ties=0)
    three = judged_report(wins=9, losses=1, ties=0, comparisons=3)
    assert three.confidence == pytest.approx(1 - 0.05 / 3)
    assert three.margin_lower is not None and one.margin_lower is not None
    assert three.margin_lower < one.margin_lower
    assert gate_decision(one, GateRules(min_decided=5)).passed
    assert not gate_decision(three, GateRules(min_decided=5)).passed  # 9-1 of the best of 3
    assert "Bonferroni: the best of 3 checkpoints" in three.render()
    boot = bootstrap_report(better=20, worse=2, same=10, comparisons=4)
    assert boot.intervals is not None and boot.intervals["comparisons"] == 4
    assert "98.75% intervals" in boot.render()


def test_the_gate_settings_are_read_from_the_cycle_config() -> None:
    cfg = parse_cycle_config({"name": "c", "alias": "a", "dataset": {"name": "d"},
                              "finetune": {"base_model": "m"},
                              "evaluate": {"min_decided": 30, "min_discordant": 20,
                                           "max_error_share": 0.05}})
    assert cfg.evaluate.rules == GateRules(0.0, "lower_bound", 30, 20, 0.05)
    with pytest.raises(ConfigError, match="max_error_share"):
        parse_cycle_config({"name": "c", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "m"},
                            "evaluate": {"max_error_share": 2}})


@pytest.mark.parametrize("scorer", ["exact", "classification", "classification_multi"])
def test_equal_models_with_a_failing_baseline_are_not_promoted(scorer: str) -> None:
    """Both models give the same answers (right on 80, wrong on 32 of 112); the baseline's
    request fails on 10 the candidate got right (under max_error_share). Failures are no
    evidence: those 10 are left out of the scores, the margin and the McNemar test."""
    labels = ["yes", "no"] if scorer == "classification" else ["yes", "no", "maybe"]
    all_cases = [EvalCase(i, [{"role": "user", "content": f"q{i}"}], f"q{i}",
                          labels[i % len(labels)] if scorer != "exact" else f"a{i}")
                 for i in range(112)]
    same = [Answer(c.reference if c.line < 80 else "wrong", None, None) for c in all_cases]
    baseline = [Answer(None, "400: bad request", None) if i < 10 else a
                for i, a in enumerate(same)]
    manifest = {"classification": {"labels": dict.fromkeys(labels, 1),
                                   "positive_class": "yes"}} if scorer != "exact" else {}
    scoring = make_scoring("classification" if scorer != "exact" else "exact", 0.5, None,
                           manifest)
    report = build_report("ev_f", "d", all_cases, {"candidate": same, "baseline": baseline},
                          MODELS, scoring, 5)
    decision = gate_decision(report, GateRules())
    assert not decision.passed
    assert report.paired is not None
    assert (report.paired["failed"], report.paired["compared"]) == (10, 102)
    assert report.paired["discordant"] == 0 and report.margin == 0
    assert report.models["baseline"]["errors"] == 10
    assert not any("max_error_share" in reason for reason in decision.reasons)  # 8.9%
    assert "failed    10 of 112 examples have a failed request (either side); the " \
        "candidate's 0 count as wrong answers, the 10 the baseline failed are left out" \
        in report.render()


@pytest.mark.parametrize("scorer", ["exact", "classification", "classification_multi"])
def test_a_candidate_failing_9_percent_is_not_promoted(scorer: str) -> None:
    """The candidate's request fails on 18 of 200 examples (9%, under max_error_share) that the
    baseline got right, and it is right on 20 others the baseline got wrong: counting a failure
    as a wrong answer it is no better (142 vs 140 right; McNemar 20-18). Its failures count
    against it (r14b #1: left out as "no evidence" they made it a clear winner, 20-0)."""
    labels = ["yes", "no"] if scorer == "classification" else ["yes", "no", "maybe"]
    all_cases = [EvalCase(i, [{"role": "user", "content": f"q{i}"}], f"q{i}",
                          labels[i % len(labels)] if scorer != "exact" else f"a{i}")
                 for i in range(200)]

    def wrong(case: EvalCase) -> Answer:
        other = labels[(labels.index(case.reference) + 1) % len(labels)] \
            if scorer != "exact" else "wrong"
        return Answer(other, None, None)

    right = [Answer(c.reference, None, None) for c in all_cases]
    baseline = [wrong(c) if 18 <= i < 38 or i >= 160 else right[i]
                for i, c in enumerate(all_cases)]
    candidate = [Answer(None, "400 context_length_exceeded", None) if i < 18
                 else wrong(c) if i >= 160 else right[i] for i, c in enumerate(all_cases)]
    manifest = {"classification": {"labels": dict.fromkeys(labels, 1),
                                   "positive_class": "yes"}} if scorer != "exact" else {}
    scoring = make_scoring("classification" if scorer != "exact" else "exact", 0.5, None,
                           manifest)
    report = build_report("ev_c", "d", all_cases, {"candidate": candidate, "baseline": baseline},
                          MODELS, scoring, 5)
    decision = gate_decision(report, GateRules())
    assert not decision.passed, report.render()
    assert report.paired is not None
    assert (report.paired["failed"], report.paired["compared"]) == (18, 200)
    assert (report.paired["candidate_better"], report.paired["baseline_better"]) == (20, 18)
    assert report.models["candidate"]["errors"] == 18
    assert "the candidate's 18 count as wrong answers, the 0 the baseline failed are left " \
        "out" in report.render()
    # the same candidate without its failures (right there) is a clear winner
    fixed = [right[i] if i < 18 else a for i, a in enumerate(candidate)]
    clear = build_report("ev_c2", "d", all_cases, {"candidate": fixed, "baseline": baseline},
                         MODELS, scoring, 5)
    assert gate_decision(clear, GateRules()).passed, clear.render()


def test_a_judged_candidates_failed_request_is_a_loss() -> None:
    """Judge: the candidate's failed request where the baseline answered is a loss, not an
    error (15 wins, 3 judged losses and 7 failed requests: 15-10, not a clear 15-3)."""
    failed, ok = Answer(None, "404 model not found", None), Answer("fine", None, None)
    outcome, how = settled(failed, ok) or ("", "")
    judgements = ([judgement("candidate")] * 15 + [judgement("baseline")] * 3
                  + [judgement("tie")] * 60 + [judgement(outcome, how)] * 7)
    n = len(judgements)
    answers = {"candidate": [failed if i >= n - 7 else ok for i in range(n)],
               "baseline": [ok] * n}
    pairwise = {"judge": "j", "rubric": "r", **pairwise_summary(judgements, 0.95)}
    report = build_report("ev_jf", "d", cases(n), answers, MODELS,
                          make_scoring("judge", 0.5, None, {}), 5, Stats(), pairwise,
                          judgements)
    assert report.pairwise is not None
    assert (report.pairwise["losses"], report.pairwise["errors"]) == (10, 0)
    assert report.pairwise["candidate_failed"] == 7
    assert not gate_decision(report, GateRules()).passed
    assert "10 losses (7 of them failed requests)" in report.render()
