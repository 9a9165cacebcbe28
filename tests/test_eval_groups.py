"""Dependent validation examples are one piece of evidence (r14g #1, #2): copies of one
prompt, one prompt answered twice and the turns of one session share a split group, the group
never straddles train and validation, and the evaluation's tests and minimums count groups.
Real exports, the real proxy and store, the fake upstream and judge."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import orjson

from exporter.eval_cases import EvalCase
from exporter.eval_gate import GateRules, gate_decision
from exporter.eval_report import Answer, Stats, build_report, make_scoring
from exporter.evaluate import EvalOptions, evaluate
from exporter.examples import Example
from exporter.judge import pairwise_summary
from exporter.pipeline import ExportOptions, export
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes.judge import FakeJudge
from tests.test_evaluate import BASELINE, CANDIDATE

JUDGE = "judge-model"


def asked(i: int, copy: int, answer: str | None = None, session: str | None = None) -> Example:
    question = f"Where is order {i}?"
    messages = [{"role": "system", "content": "You answer about orders."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer or f"echo: {question}"}]
    return Example(f"ix-{i:03d}-{copy}", messages, revision_id=f"r{i}-{copy}", revision=1,
                   session_id=session)


def faq_export(path: Path) -> Path:
    """10 questions, each logged 6 times (a FAQ app): 60 examples."""
    export([asked(i, c) for i in range(10) for c in range(6)], path,
           ExportOptions(name="faq", validation_fraction=0.3, workers=1))
    return path


def prompts(path: Path, name: str) -> list[str]:
    return [json.loads(line)["messages"][1]["content"]
            for line in (path / name).read_text().splitlines() if line]


def test_copies_of_three_prompts_do_not_promote_through_the_judge(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = faq_export(tmp_path / "faq")
    lines = prompts(data, "validation.jsonl")
    assert len(lines) == 18 and len(set(lines)) == 3
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    proxy.upstream.state.judges[JUDGE] = FakeJudge(prefer="echo:")
    report = evaluate(proxy.admin(), data,
                      EvalOptions(CANDIDATE, BASELINE, scorer="judge", judge_model=JUDGE),
                      api_key=UPSTREAM_KEY)
    assert report.pairwise is not None and report.pairwise["wins"] == 18
    decision = gate_decision(report, GateRules())
    assert not decision.passed
    assert report.groups == 3 and report.pairwise["decided_groups"] == 3
    assert any("only 3 decided pairs" in r and "18 pairs" in r for r in decision.reasons)
    # 3 of 3 won is no evidence at 95% either: the exact test over the groups refuses it
    assert not gate_decision(report, GateRules(min_decided=0)).passed
    text = report.render()
    assert "18 validation examples in 3 independent groups" in text
    assert "3 decided groups (18 pairs" in text
    stored = proxy.admin().eval_run(report.run_id)
    assert stored["status"] == "done" and stored["report"]["groups"] == 3


def test_copies_of_three_prompts_do_not_pass_mcnemar(proxy: ProxyServer,
                                                     tmp_path: Path) -> None:
    data = faq_export(tmp_path / "faq")
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE),
                      api_key=UPSTREAM_KEY)
    assert report.paired is not None and report.paired["discordant"] == 18
    decision = gate_decision(report, GateRules())
    assert not decision.passed
    assert report.paired["discordant_groups"] == 3
    assert any("only 3 discordant examples" in r for r in decision.reasons)
    assert not gate_decision(report, GateRules(min_discordant=0)).passed  # McNemar: 3 of 3
    assert "in independent groups 3 discordant" in report.render()


def test_one_prompt_answered_twice_stays_on_one_side_of_the_split(tmp_path: Path) -> None:
    # the same 20 questions answered twice (a temperature above 0, a reviewer's edit of one)
    data = tmp_path / "twice"
    result = export([asked(i, c, answer=f"answer {c} to {i}") for i in range(20)
                     for c in range(2)], data,
                    ExportOptions(name="twice", validation_fraction=0.3, workers=1))
    validation = set(prompts(data, "validation.jsonl"))
    assert validation and not validation & set(prompts(data, "train.jsonl"))
    assert len(prompts(data, "validation.jsonl")) == 2 * len(validation)  # both answers
    found = {f.code: f for f in result.report.findings}
    assert found["same_prompt"].count == 20 and "duplicates" not in found
    assert result.report.details["validation_groups"] == len(validation)


def _drop_groups(path: Path) -> None:
    """The export as written before lineage records named their group."""
    lineage = path / "lineage.jsonl"
    records = [orjson.loads(line) for line in lineage.read_bytes().splitlines()]
    lineage.write_bytes(b"".join(orjson.dumps({k: v for k, v in r.items() if k != "group"})
                                 + b"\n" for r in records))
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    manifest["files"]["lineage.jsonl"]["sha256"] = hashlib.sha256(
        lineage.read_bytes()).hexdigest()
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_an_export_without_groups_counts_distinct_prompts(proxy: ProxyServer,
                                                          tmp_path: Path) -> None:
    data = faq_export(tmp_path / "faq")
    _drop_groups(data)
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE),
                      api_key=UPSTREAM_KEY)
    assert not gate_decision(report, GateRules()).passed
    assert report.groups == 3 and report.paired is not None
    assert report.paired["discordant_groups"] == 3


def test_the_turns_of_a_session_count_once() -> None:
    # 12 sessions of 3 turns each, every turn won: 36 pairs, 12 independent groups
    cases = [EvalCase(i, [{"role": "user", "content": f"turn {i}"}], f"turn {i}", f"a{i}",
                      group=f"g{i // 3}") for i in range(36)]
    judgements = [{"line": c.line, "source_id": None, "reference": False, "orders": [],
                   "outcome": "candidate" if c.line % 3 else "baseline", "how": "judged"}
                  for c in cases]  # per session: two turns won, one lost: a won session
    answers = {role: [Answer(f"{role} {c.line}", None, None) for c in cases]
               for role in ("candidate", "baseline")}
    groups = [c.line // 3 for c in cases]
    pairwise = {"judge": "j", "rubric": "r", **pairwise_summary(judgements, 0.95, groups)}
    assert pairwise["wins"] == 24 and pairwise["losses"] == 12
    assert pairwise["groups"]["wins"] == 12 and pairwise["decided_groups"] == 12
    report = build_report("ev", "d", cases, answers, {"candidate": "c", "baseline": "b"},
                          make_scoring("judge", 0.5, None, {}), 5, Stats(), pairwise,
                          judgements)
    assert report.groups == 12
    assert gate_decision(report, GateRules()).passed  # 12 of 12 sessions won
    assert not gate_decision(report, GateRules(min_decided=13)).passed


def infinite_ratio(prediction: str, reference: str) -> float:
    """A user scorer (`tests.test_eval_groups:infinite_ratio`): a ratio over 0 words where
    the answer echoes the question."""
    return float("inf") if prediction.startswith("echo:") else 1.0


def test_an_infinite_score_is_refused_and_the_run_does_not_stay_running(
        proxy: ProxyServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.conftest import ADMIN_TOKEN
    from tuneloop.cli import main

    data = faq_export(tmp_path / "faq")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "c.duckdb"), "evaluate", "--dataset", str(data),
        "--candidate", CANDIDATE, "--baseline", BASELINE,
        "--scorer", "tests.test_eval_groups:infinite_ratio"], env=env)
    assert result.exit_code == 2, result.output
    assert "returned inf" in result.output and "finite" in result.output
    [run] = proxy.admin().eval_runs()
    assert run["status"] == "failed" and "returned inf" in run["error"]
