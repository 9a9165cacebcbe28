"""Evaluation polish from the trial (issue 14): a classification evaluation asks for no more
tokens than the longest label takes (with the stop sequence) and sends the stop sequence, to
the legacy model and the chat baseline alike; `evaluate` and `cycle` print every score, not
only the compared one. Real proxy on loopback, fake upstream, the
official SDK through exporter.evaluate."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from exporter.evaluate import EvalOptions, evaluate
from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_cycle import ALIAS, loop  # noqa: F401  (loop: the fixture)
from tuneloop.cli import main
from tuneloop.tokenizers import load_encoding

LABELS = ("billing_dispute_escalation", "other")
STOP = " END"


def test_classification_evaluation_sizes_max_tokens_to_the_longest_label(
        proxy: ProxyServer, tmp_path: Path) -> None:
    examples = [Example(f"ix-{i}", [{"role": "user", "content": f"Ticket {i}: refund me"},
                                    {"role": "assistant", "content": LABELS[i % 2]}])
                for i in range(30)]
    data = tmp_path / "tickets"
    export(examples, data, ExportOptions(
        name="tickets", format=FormatOptions("classification", stop=STOP,
                                               positive_class=LABELS[0]),
        base_model="babbage-002", validation_fraction=0.3, workers=1))
    candidate, baseline = "ft:babbage-002:acme::c", "gpt-4o-mini"
    proxy.upstream.state.model_replies.update({candidate: f" other{STOP}", baseline: "other"})
    report = evaluate(proxy.admin(), data,
                      EvalOptions(candidate, baseline, scorer="classification"),
                      api_key=UPSTREAM_KEY)
    assert report.examples > 0
    legacy = max(len(load_encoding("cl100k_base").encode(f" {label}{STOP}"))
                 for label in LABELS)  # babbage-002's encoding; the chat baseline's is o200k
    chat = max(len(load_encoding("o200k_base").encode(f" {label}{STOP}")) for label in LABELS)
    sent = [r for r in proxy.upstream.state.requests
            if r.path in ("/v1/completions", "/v1/chat/completions")]
    assert {r.path for r in sent} == {"/v1/completions", "/v1/chat/completions"}
    for request in sent:
        wanted = legacy if request.path == "/v1/completions" else chat
        assert request.json["max_tokens"] == wanted, request.json
        assert request.json["stop"] == STOP
    assert 3 < legacy < 20


def test_evaluate_and_cycle_text_output_show_every_score(proxy: ProxyServer,
                                                          tmp_path: Path) -> None:
    examples = [Example(f"ix-{i}", [{"role": "user", "content": f"Is message {i} spam?"},
                                    {"role": "assistant", "content": "yes" if i % 3 else "no"}])
                for i in range(40)]
    data = tmp_path / "spam"
    export(examples, data, ExportOptions(
        name="spam", format=FormatOptions("classification", positive_class="yes"),
        base_model="babbage-002", validation_fraction=0.3, workers=1))
    proxy.upstream.state.model_replies.update({"ft:babbage-002:acme::c": " yes",
                                               "babbage-002": " no"})
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(data),
        "--candidate", "ft:babbage-002:acme::c", "--baseline", "babbage-002",
        "--scorer", "classification"], env=env)
    assert result.exit_code == 0, result.output
    report = proxy.admin().eval_run(proxy.admin().eval_runs()[0]["id"])["report"]
    shown = " ".join(result.output.split())
    for role in ("candidate", "baseline"):
        metrics = report["models"][role]["metrics"]
        for name in ("accuracy", "precision", "recall", "f1", "auroc", "auprc"):
            assert f"{name} {metrics[name]:.4f}" in shown or name == report["metric"], name
    assert f"margin {report['margin']:+.4f}" in shown


def test_cycle_text_output_shows_the_evaluation_scores(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    toml = tmp_path / "cycle.toml"
    toml.write_text(f"""
name = "support"
alias = "{ALIAS}"
[dataset]
name = "support"
validation = 0.3
out_dir = "{tmp_path / 'exports'}"
[finetune]
base_model = "gpt-4o-mini-2024-07-18"
poll_seconds = 0.02
[evaluate]
margin = 0.5
""")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": loop.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "cycle",
                                       "--config", str(toml)], env=env)
    assert result.exit_code == 0, result.output
    run = loop.admin().cycle_runs("support")[0]
    assert run["outcome"] == "not_promoted"
    report = loop.admin().eval_run(run["state"]["eval_run_id"])["report"]
    shown = " ".join(result.output.split())
    for role in ("candidate", "baseline"):
        model = report["models"][role]
        assert f"{role} {model['model']} {model['score']:.4f}" in shown
    assert f"margin {report['margin']:+.4f}" in shown
