"""Evaluation through a real proxy: both models asked as evaluation traffic, scored, the report
stored; retries, legacy prompts with separator and stop, classification metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exporter.evaluate import EvalOptions, evaluate
from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer, both_stores
from tuneloop.cli import main
from tuneloop.errors import ModelUnreachable

pytestmark = both_stores

CANDIDATE = "ft:gpt-4o-mini-2024-07-18:acme::v1"
BASELINE = "gpt-4o-mini"


def qa_example(i: int) -> Example:
    question = f"Where is order {i}?"
    messages = [{"role": "system", "content": "You answer about orders."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"echo: {question}"}]  # what the fake answers
    return Example(f"ix-{i:03d}", messages, revision_id=f"r{i}", revision=1)


def make_export(path: Path, count: int = 30, **options: Any) -> Path:
    export([qa_example(i) for i in range(count)], path,
           ExportOptions(name="qa", validation_fraction=0.3, workers=1, **options))
    return path


def validation_lines(path: Path) -> int:
    return sum(1 for line in (path / "validation.jsonl").read_text().splitlines() if line)


def length_ratio(prediction: str, reference: str) -> float:
    """A user scorer (`tests.test_evaluate:length_ratio`)."""
    return min(len(prediction), len(reference)) / max(len(prediction), len(reference), 1)


def test_candidate_beats_baseline_as_marked_evaluation_traffic(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    n = validation_lines(data)
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."
    report = evaluate(proxy.admin(), data, EvalOptions(CANDIDATE, BASELINE),
                      api_key=UPSTREAM_KEY)
    assert report.examples == n and n >= 5
    assert report.models["candidate"]["score"] == 1.0
    assert report.models["baseline"]["score"] == 0.0 and report.margin == 1.0
    assert report.differences_total == n
    first = report.differences[0]
    assert first["baseline"]["answer"] == "I don't know." and first["candidate"]["score"] == 1.0

    stored = proxy.admin().eval_run(report.run_id)
    assert stored["status"] == "done" and stored["margin"] == 1.0
    assert stored["candidate_score"] == 1.0 and stored["report"]["examples"] == n
    assert proxy.admin().eval_runs()[0]["id"] == report.run_id

    proxy.wait_logged(2 * n)
    rows = proxy.sql("SELECT traffic, model, tags FROM interactions")
    assert len(rows) == 2 * n
    assert {r[0] for r in rows} == {"evaluation"}
    assert all(f"eval:{report.run_id}" in r[2] for r in rows)
    assert sorted(r[1] for r in rows) == sorted([CANDIDATE] * n + [BASELINE] * n)
    assert proxy.admin().interactions(traffic="production")["items"] == []
    sent = [r for r in proxy.upstream.state.requests if r.path == "/v1/chat/completions"]
    assert all(r.json["temperature"] == 0 and r.json["messages"][-1]["role"] == "user"
               for r in sent)
    assert "x-tuneloop-traffic" not in sent[0].headers  # our headers never go upstream
    assert "x-tuneloop-source" not in sent[0].headers
    assert report.render().count("\n") > 3
    # each evaluation row names the interaction its prompt came from (lineage), so that
    # forgetting that interaction's user reaches the copies
    lineage = [line for line in (data / "lineage.jsonl").read_text().splitlines()
               if '"split":"validation"' in line]
    sources = sorted(r[0] for r in proxy.sql("SELECT source_id FROM interactions"))
    assert sources == sorted(2 * [line.split('"interaction_id":"')[1].split('"')[0]
                                  for line in lineage])


def test_retries_429_and_5xx_with_backoff_then_records_failures(
        proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    proxy.upstream.state.fail_next(2, 429, retry_after=0.01)
    options = EvalOptions(CANDIDATE, BASELINE, concurrency=1, retries=2, backoff_s=0.01,
                          max_backoff_s=0.05, limit=3)
    report = evaluate(proxy.admin(), data, options, api_key=UPSTREAM_KEY)
    assert report.models["candidate"]["retries"] == 2
    assert report.models["candidate"]["errors"] == 0 and report.margin == 0.0

    proxy.upstream.state.fail_next(4, 500)
    options = EvalOptions(CANDIDATE, BASELINE, concurrency=1, retries=2, backoff_s=0.01,
                          max_backoff_s=0.05, limit=3)
    # 3 attempts failed, then it gave up: 1 of 3 requests never reached the candidate, too
    # many to score it (tests/test_eval_unreachable.py: a few are its wrong answers)
    with pytest.raises(ModelUnreachable, match=r"the candidate .* could not be reached on 1 "
                                               r"of 3 evaluation requests \(gave up after 3 "):
        evaluate(proxy.admin(), data, options, api_key=UPSTREAM_KEY)


def test_a_legacy_candidate_gets_the_separator_and_stop_and_the_baseline_the_app_prompt(
    proxy: ProxyServer, tmp_path: Path,
) -> None:
    data = make_export(tmp_path / "legacy", format=FormatOptions("legacy"),
                       base_model="davinci-002")
    proxy.upstream.state.model_replies["davinci-002"] = " no idea"
    report = evaluate(proxy.admin(), data,
                      EvalOptions("ft:davinci-002:acme::v1", "davinci-002", scorer="exact"),
                      api_key=UPSTREAM_KEY)
    sent = [r.json for r in proxy.upstream.state.requests if r.path == "/v1/completions"]
    candidate = [b for b in sent if b["model"] == "ft:davinci-002:acme::v1"]
    assert candidate and all(b["prompt"].endswith("\n\n###\n\n") and b["stop"] == "###"
                             and b["max_tokens"] > 16 for b in candidate)
    # the current model gets the app's prompt as sent, as its route target does
    baseline = [b for b in sent if b["model"] == "davinci-002"]
    assert len(baseline) == len(candidate)
    assert all("###" not in b["prompt"] and "stop" not in b and b["max_tokens"] > 16
               for b in baseline)
    assert report.models["candidate"]["score"] == 1.0 and report.margin == 1.0


def test_classification_metrics_at_a_threshold(proxy: ProxyServer, tmp_path: Path) -> None:
    examples = [Example(f"ix-{i}", [{"role": "user", "content": f"Is message {i} spam?"},
                                    {"role": "assistant", "content": "yes" if i % 3 else "no"}])
                for i in range(40)]
    data = tmp_path / "cls"
    export(examples, data, ExportOptions(
        name="spam", format=FormatOptions("classification", positive_class="yes"),
        base_model="babbage-002", validation_fraction=0.3, workers=1))
    proxy.upstream.state.model_replies.update({"ft:babbage-002:acme::c": " yes",
                                               "babbage-002": " no"})
    report = evaluate(proxy.admin(), data,
                      EvalOptions("ft:babbage-002:acme::c", "babbage-002",
                                  scorer="classification", threshold=0.7),
                      api_key=UPSTREAM_KEY)
    candidate = report.models["candidate"]["metrics"]
    assert report.metric == "f1" and report.threshold == 0.7
    assert candidate["recall"] == 1.0 and 0 < candidate["precision"] < 1
    assert report.models["baseline"]["score"] == 0.0
    assert report.margin == pytest.approx(candidate["f1"])
    sent = [r.json for r in proxy.upstream.state.requests if r.path == "/v1/completions"]
    assert all(b["logprobs"] == 5 for b in sent)


def test_cli_with_a_user_scorer(proxy: ProxyServer, tmp_path: Path) -> None:
    data = make_export(tmp_path / "qa")
    proxy.upstream.state.model_replies[BASELINE] = "echo:"
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(data),
        "--candidate", CANDIDATE, "--baseline", BASELINE,
        "--scorer", "tests.test_evaluate:length_ratio"], env=env)
    assert result.exit_code == 0, result.output
    assert "margin" in result.output and "tests.test_evaluate:length_ratio" in result.output
    run = proxy.admin().eval_runs()[0]
    assert run["status"] == "done" and 0 < run["baseline_score"] < 1 < run["margin"] + 1
    bad = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(data),
        "--candidate", CANDIDATE, "--baseline", BASELINE, "--scorer", "nosuchmodule:f"],
        env=env)
    assert bad.exit_code == 2 and "cannot import" in bad.output
