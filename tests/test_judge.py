"""The judge scorer through a real proxy and the fake upstream's scriptable judge: every pair
judged in both orders as evaluation traffic, verdicts and reasons stored with the run, the win
rate's interval and sign test, and the gate on its lower bound (DuckDB only: the report is
stored as before, the store makes no difference here)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from exporter.cycle_config import EvaluateConfig
from exporter.cycle_steps import gate_passes
from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import EvalReport
from exporter.evaluate import EvalOptions, evaluate
from exporter.intervals import bonferroni, clopper_pearson
from exporter.judge_prompt import DEFAULT_RUBRIC
from exporter.pipeline import ExportOptions, export
from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.fakes.judge import FakeJudge
from tests.test_cycle import ALIAS, CURRENT, config, run, the_current_model_is_worse
from tests.test_evaluate import (
    BASELINE,
    CANDIDATE,
    make_export,
    qa_example,
    validation_lines,
)
from tuneloop.cli import main

JUDGE = "judge-model"
loop = test_cycle.loop  # the cycle's fixture: approved traffic, a route, fast fine-tuning


def judged(proxy: ProxyServer, data: Path, judge: FakeJudge) -> EvalReport:
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    proxy.upstream.state.judges[JUDGE] = judge
    return evaluate(proxy.admin(), data,
                    EvalOptions(CANDIDATE, BASELINE, scorer="judge", judge_model=JUDGE),
                    api_key=UPSTREAM_KEY)


def test_a_judge_preferring_the_candidate_promotes_it_from_the_cli(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    n = validation_lines(data)
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    proxy.upstream.state.judges[JUDGE] = FakeJudge(prefer="echo:")
    rubric = tmp_path / "rubric.md"
    rubric.write_text("Prefer answers that repeat the question (house style).\n")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(data),
        "--candidate", CANDIDATE, "--baseline", BASELINE, "--scorer", "judge",
        "--judge-model", JUDGE, "--rubric", str(rubric)], env=env)
    assert result.exit_code == 0, result.output
    assert f"{n} wins, 0 losses, 0 ties, 0 errors" in result.output
    assert "win rate 1.0000 [0." in result.output and "sign test p = " in result.output
    # the gate is shown too: 9 of 9 won, but fewer decided pairs than the default minimum
    assert n == 9 and "gate (lower_bound, margin 0): not passed: only 9 decided pairs " \
        "(wins + losses), fewer than min_decided 10" in " ".join(result.output.split())

    run = proxy.admin().eval_runs()[0]
    stored = proxy.admin().eval_run(run["id"])["report"]
    pairwise = stored["pairwise"]
    assert pairwise["wins"] == n and pairwise["losses"] == 0 and n >= 5
    assert pairwise["interval"][0] > 0.5 and pairwise["p_value"] == 2 / 2**n
    assert stored["margin_interval"][0] > 0 and stored["models"]["candidate"]["score"] == 1.0
    assert pairwise["rubric"] == rubric.read_text().strip()
    for judgement in stored["judgements"]:
        assert judgement["outcome"] == "candidate" and judgement["source_id"]
        assert [o["order"] for o in judgement["orders"]] == ["candidate_first",
                                                            "baseline_first"]
        assert [o["verdict"] for o in judgement["orders"]] == ["A", "B"]
        assert all(o["reason"].startswith(f"fake judge says {o['verdict']}; A said ")
                   for o in judgement["orders"])

    # the judge was asked through the proxy as evaluation traffic, with the rubric
    asked = [r.json for r in proxy.upstream.state.requests
             if r.path == "/v1/chat/completions" and r.json["model"] == JUDGE]
    assert len(asked) == 2 * n
    assert all("house style" in body["messages"][1]["content"] for body in asked)
    proxy.wait_logged(4 * n)
    rows = proxy.sql(f"SELECT traffic, tags FROM interactions WHERE model = '{JUDGE}'")
    assert len(rows) == 2 * n and all(r[0] == "evaluation" and "eval-judge" in r[1]
                                      for r in rows)
    report = EvalReport(run["id"], "d", n, "judge", "win_rate", None, stored["models"],
                        stored["margin"], [], 0, margin_interval=stored["margin_interval"])
    assert gate_passes(report, EvaluateConfig())


def test_a_coin_flip_judge_promotes_nothing(proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa", count=60)
    report = judged(proxy, data, FakeJudge(coin=True, seed=1))
    pairwise = report.pairwise
    assert pairwise is not None
    low, high = pairwise["interval"]
    assert pairwise["decided"] > 0 and pairwise["orders_disagreed"] > 0
    assert low < 0.5 < high and pairwise["p_value"] > 0.05
    assert not gate_passes(report, EvaluateConfig())


def test_a_position_biased_judge_makes_ties_seen_in_both_orders(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    report = judged(proxy, data, FakeJudge(position_a=True))
    assert report.pairwise is not None
    assert report.pairwise["ties"] == report.examples and report.pairwise["wins"] == 0
    assert report.pairwise["orders_disagreed"] == report.examples
    stored = proxy.admin().eval_run(report.run_id)["report"]
    for judgement in stored["judgements"]:
        assert judgement["outcome"] == "tie"
        assert [(o["order"], o["verdict"], o["prefers"]) for o in judgement["orders"]] == [
            ("candidate_first", "A", "candidate"), ("baseline_first", "A", "baseline")]
    assert not gate_passes(report, EvaluateConfig())
    assert "judge     judge-model: 0 wins, 0 losses" in report.render()


def test_unparseable_judge_output_is_retried_once_and_never_a_win(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    garbage = FakeJudge(prefer="echo:", garbage=True)
    report = judged(proxy, data, garbage)
    n = report.examples
    assert report.pairwise is not None
    # a pair the judge could not judge is a loss (r14e #6): no evidence for the candidate
    assert (report.pairwise["losses"], report.pairwise["judge_failed"]) == (n, n)
    assert report.pairwise["errors"] == 0 and report.pairwise["wins"] == 0
    assert garbage.asked == 2 * 2 * n  # each order asked twice, no more
    assert report.models["candidate"]["score"] == 0.0
    assert not gate_passes(report, EvaluateConfig())
    [order, _] = proxy.admin().eval_run(report.run_id)["report"]["judgements"][0]["orders"]
    assert order["attempts"] == 2 and order["verdict"] is None
    assert order["error"].startswith("unparseable judge output: 'Answer A is clearly")

    once = FakeJudge(prefer="echo:", garbage_first=True)
    report = judged(proxy, data, once)
    assert report.pairwise is not None and report.pairwise["wins"] == n
    assert once.asked == 2 * 2 * n
    assert report.judgements is not None
    assert all(o["attempts"] == 2 for j in report.judgements for o in j["orders"])


def test_failed_answers_and_failed_judge_requests_are_errors_never_wins(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    proxy.upstream.state.judges[JUDGE] = judge = FakeJudge(prefer="echo:")
    # the candidate's requests fail (400): losses (the baseline answered), no judge is asked
    report = evaluate(proxy.admin(), data, EvalOptions("fail-400", BASELINE, scorer="judge",
                                                       judge_model=JUDGE, limit=4),
                      api_key=UPSTREAM_KEY)
    assert report.pairwise is not None
    assert (report.pairwise["losses"], report.pairwise["errors"]) == (4, 0)
    assert judge.asked == 0 and report.judgements is not None
    assert {j["how"] for j in report.judgements} == {"candidate_failed"}
    # the current model's requests fail: no evidence that the candidate is better, no win
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, "fail-400", scorer="judge",
                                                       judge_model=JUDGE, limit=4),
                      api_key=UPSTREAM_KEY)
    assert report.pairwise is not None
    assert report.pairwise["wins"] == 0 and report.pairwise["errors"] == 4
    assert report.pairwise["errors_by_kind"]["baseline_failed"] == 4
    assert not gate_decision(report, GateRules(min_decided=0)).passed
    assert "4 errors (baseline_failed 4)" in report.render()
    # the judge's requests fail (400, not retried): losses (r14e #6), never wins
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE, scorer="judge",
                                                       judge_model="fail-400", limit=4),
                      api_key=UPSTREAM_KEY)
    assert report.pairwise is not None
    assert report.pairwise["losses"] == 4 and report.pairwise["wins"] == 0
    assert report.pairwise["judge_failed"] == 4 and report.pairwise["error_share"] == 1.0
    assert report.judgements is not None
    order = report.judgements[0]["orders"][0]
    assert order["attempts"] == 1 and order["error"].startswith("judge request failed: 400")
    assert not gate_passes(report, EvaluateConfig())


def test_the_judge_needs_a_model_and_a_readable_rubric(proxy: ProxyServer,
                                                       tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    base = ["--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(data),
            "--candidate", CANDIDATE, "--baseline", BASELINE, "--scorer", "judge"]
    no_model = CliRunner().invoke(main, base, env=env)
    assert no_model.exit_code == 2 and "needs a judge model" in no_model.output
    empty = tmp_path / "empty.md"
    empty.write_text("  \n")
    for rubric, message in ((tmp_path / "missing.md", "rubric file not found"),
                            (empty, "the rubric is empty")):
        bad = CliRunner().invoke(main, [*base, "--judge-model", JUDGE, "--rubric", str(rubric)],
                                 env=env)
        assert bad.exit_code == 2 and message in bad.output
    assert proxy.admin().eval_runs() == []  # refused before any run or request
    assert DEFAULT_RUBRIC and json.dumps(DEFAULT_RUBRIC)


def credit_two(prediction: str, reference: str) -> float:
    """A user scorer (`tests.test_judge:credit_two`) crediting 2 of the 9 validation examples
    of the cycle's export."""
    return float(prediction == reference and reference.endswith(("order 1?", "order 9?")))


def test_cycle_gate_wants_the_lower_bound_above_the_margin(loop: ProxyServer,
                                                           tmp_path: Path) -> None:
    the_current_model_is_worse(loop)
    said: list[str] = []
    cfg = config(tmp_path, evaluate={"margin": 0.05, "scorer": "tests.test_judge:credit_two"})
    outcome = run(loop, cfg, say=said.append)
    state = outcome.run["state"]
    # the candidate scored better (2 of 9 examples), by more than the margin, but the
    # interval of the margin (a mean's: the t-interval) reaches below 0: no promotion
    assert state["margin"] == 2 / 9 and state["margin_interval"][0] < 0
    assert outcome.run["outcome"] == "not_promoted"
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
    [scores] = [text for text in said if text.startswith("evaluation ")]
    assert "+0.2222 [-0.1167, +0." in scores and "gate (lower_bound, margin 0.05): not passed" \
        in scores


def test_cycle_with_the_judge_promotes_a_preferred_candidate(loop: ProxyServer,
                                                             tmp_path: Path) -> None:
    the_current_model_is_worse(loop)
    loop.upstream.state.judges[JUDGE] = FakeJudge(prefer="echo:")
    cfg = config(tmp_path, evaluate={"scorer": "judge", "judge_model": JUDGE})
    outcome = run(loop, cfg)
    state = outcome.run["state"]
    assert outcome.run["step"] == "watch" and state["candidate_score"] == 1.0
    assert state["candidate_interval"][0] > 0.5 and state["margin_interval"][0] > 0
    assert len(loop.admin().routes()[ALIAS]["targets"]) == 2  # the canary is on

    loop.upstream.state.judges[JUDGE] = FakeJudge(coin=True, seed=1)
    again = run(loop, config(tmp_path, name="coin",
                             evaluate={"scorer": "judge", "judge_model": JUDGE}))
    assert again.run["outcome"] == "not_promoted"
    low, high = again.run["state"]["candidate_interval"]
    assert low < 0.5 < high


def judged_with_references(proxy: ProxyServer, data: Path, report: EvalReport,
                           edited: set[str]) -> tuple[set[int], list[str]]:
    """The validation lines judged with a reviewer's reference, asserted to be exactly those
    made from the `edited` interactions (some, not all) and shown in both orders; and every
    prompt the judge was asked."""
    assert report.judgements is not None
    lineage = [json.loads(line) for line in (data / "lineage.jsonl").read_text().splitlines()]
    by_line = {r["line"]: r for r in lineage if r["split"] == "validation"}
    with_reference = {j["line"] for j in report.judgements if j["reference"]}
    assert with_reference == {line for line, r in by_line.items()
                              if r["interaction_id"] in edited}
    assert 0 < len(with_reference) < report.examples
    asked = [r.json["messages"][1]["content"] for r in proxy.upstream.state.requests
             if r.path == "/v1/chat/completions" and r.json["model"] == JUDGE]
    references = [text for text in asked if "<<<REFERENCE>>>" in text]
    assert len(references) == 2 * len(with_reference)  # both orders see it
    return with_reference, asked


def test_reviewers_edited_answers_are_the_judges_references(proxy: ProxyServer,
                                                             tmp_path: Path) -> None:
    examples = [qa_example(i) for i in range(30)]
    edited = {e.interaction_id for e in examples[::2]}  # a reviewer rewrote these answers
    examples = [e._replace(original={"role": "assistant", "content": "the logged answer"})
                if e.interaction_id in edited else e for e in examples]
    data = tmp_path / "qa"
    export(examples, data, ExportOptions(name="qa", validation_fraction=0.3, workers=1))
    report = judged(proxy, data, FakeJudge(prefer="echo:"))
    with_reference, asked = judged_with_references(proxy, data, report, edited)
    validation = (data / "validation.jsonl").read_text().splitlines()
    for line in with_reference:
        answer = json.loads(validation[line - 1])["messages"][-1]["content"]
        assert sum(f"<<<REFERENCE>>>\n(an answer written by a human reviewer; a good answer "
                   f"agrees with it in substance)\n{answer}\n" in text for text in asked) == 2


def test_checkpoints_are_judged_too(loop: ProxyServer, tmp_path: Path) -> None:
    the_current_model_is_worse(loop)
    loop.upstream.state.judges[JUDGE] = FakeJudge(prefer="echo:")
    loop.upstream.state.finetune_step_seconds = 0.3  # still training when the wait times out
    judge = {"scorer": "judge", "judge_model": JUDGE, "checkpoints": 3}
    first = run(loop, config(tmp_path, evaluate=judge, finetune={"wait_timeout_minutes": 0.001}))
    assert first.run["step"] == "wait"
    [job] = loop.upstream.state.jobs.values()
    names = {step: f"{job.model_name()}:ckpt-step-{step}" for step in (6, 8, 10)}
    loop.upstream.state.model_replies.update({names[6]: "I don't know.",
                                              names[10]: "I don't know."})
    loop.upstream.state.finetune_step_seconds = 0.01
    second = run(loop, config(tmp_path, evaluate=judge))
    assert second.run["step"] == "watch", second.message
    assert second.run["state"]["fine_tuned_model"] == names[8]
    assert second.run["state"]["candidate_interval"][0] > 0.5

    export_dir = second.run["state"]["export_path"]
    shown = CliRunner().invoke(main, [
        "jobs", "checkpoints", job.id, "--dataset", export_dir, "--baseline", CURRENT,
        "--scorer", "judge", "--judge-model", JUDGE, "--api", loop.url],
        env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line for line in shown.output.splitlines()[1:]}
    assert lines["8"].endswith("<- best") and "1.0000" in lines["8"]
    assert "[+0.000, +0.000]" in lines["6"]  # the same answers, all ties: no margin
    # 9 pairs, all won; the exact interval at Bonferroni's level for the 3 checkpoints
    low, high = (2 * bound - 1 for bound in clopper_pearson(9, 9, bonferroni(0.95, 3)))
    assert f"[{low:+.3f}, {high:+.3f}]" in lines["8"]
    assert "Bonferroni over 3 checkpoints" in shown.output
