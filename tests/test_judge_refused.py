"""A pair the judge could not judge counts against the candidate (r14e #6): a judge API that
refuses to judge an unsafe answer (a content filter's 400) must not take the candidate's worst
answers out of the sample. The pair is a loss in the report, its interval and the gate, and
still counts towards max_error_share."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import EvalReport
from exporter.evaluate import EvalOptions, evaluate
from exporter.judge import pairwise_summary
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes.judge import FakeJudge
from tests.test_evaluate import BASELINE, CANDIDATE, make_export

JUDGE = "judge-model"


def test_pairs_the_judge_refuses_to_judge_are_losses(proxy: ProxyServer,
                                                     tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    questions = [json.loads(line)["messages"][-2]["content"]
                 for line in (data / "validation.jsonl").read_text().splitlines() if line]
    n = len(questions)
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    proxy.upstream.state.judges[JUDGE] = judge = FakeJudge(prefer="echo:")
    unsafe = questions[:3]  # the judge's content filter refuses these candidate answers
    for question in unsafe:
        proxy.upstream.state.fail_containing[f"echo: {question}"] = 400
    report = evaluate(proxy.admin(), data,
                      EvalOptions(CANDIDATE, BASELINE, scorer="judge", judge_model=JUDGE),
                      api_key=UPSTREAM_KEY)
    p = report.pairwise
    assert p is not None and report.judgements is not None
    # on main: 3 errors, left out of the win rate (the candidate's worst answers unseen)
    assert (p["wins"], p["losses"], p["errors"]) == (n - 3, 3, 0), p
    assert (p["judge_failed"], p["failed"]) == (3, 3)
    assert p["error_share"] == 3 / n and p["decided"] == n
    refused = [j for j in report.judgements if j["how"] == "judge_failed"]
    assert len(refused) == 3 and {j["outcome"] for j in refused} == {"baseline"}
    assert refused[0]["orders"][0]["error"].startswith("judge request failed: 400")
    assert report.models["candidate"]["score"] == (n - 3) / n
    assert "3 losses (3 of them pairs the judge could not judge)" in report.render()
    assert judge.asked == 2 * (n - 3)  # the refused requests never reached its verdicts


def report_of(judgements: list[dict[str, object]]) -> EvalReport:
    p = pairwise_summary(judgements, 0.95)
    low, high = p["interval"]
    return EvalReport("ev", "d", len(judgements), "judge", "win_rate", None, {}, 0.0, [], 0,
                      0.95, [2 * low - 1, 2 * high - 1], None, {**p, "judge": "j"})


def test_an_unsafe_candidate_no_better_than_the_baseline_does_not_pass() -> None:
    """1,000 pairs: the judge refuses the candidate's unsafe answer in 90 (9%), and the
    candidate wins 501 of the other 910 (55%): 501 wins against 499 pairs not won."""
    # as the judge recorded them before r14e #6 (outcome "error"): a loss all the same
    older: list[dict[str, object]] = (
        [{"outcome": "candidate", "how": "judged", "orders": []}] * 501
        + [{"outcome": "baseline", "how": "judged", "orders": []}] * 409
        + [{"outcome": "error", "how": "judge_failed", "orders": []}] * 90)
    rules = GateRules(margin=0.02)
    decision = gate_decision(report_of(older), rules)
    # on main the 90 pairs were left out: 501 of 910 won, lower bound +0.035: passed
    assert not decision.passed, decision.render(rules)
    assert decision.decided_on is not None and decision.decided_on < 0
    now = [{**j, "outcome": "baseline"} if j["how"] == "judge_failed" else j for j in older]
    assert report_of(older).pairwise == report_of(now).pairwise


def test_many_failed_judgements_stop_the_gate_too() -> None:
    judgements: list[dict[str, object]] = (
        [{"outcome": "candidate", "how": "judged", "orders": []}] * 80
        + [{"outcome": "baseline", "how": "judge_failed", "orders": []}] * 20)
    rules = GateRules(margin=0.02)
    decision = gate_decision(report_of(judgements), rules)
    assert not decision.passed
    assert "20 of 100 pairs are errors or failed judgements (20.0% > max_error_share" \
        in decision.render(rules)
