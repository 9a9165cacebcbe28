"""Evaluation polish from the trial (issue 14): a classification evaluation asks for no more
tokens than the longest label takes (with the stop sequence) and sends the stop sequence, to
the legacy model and the chat baseline alike. Real proxy on loopback, fake upstream, the
official SDK through exporter.evaluate."""

from __future__ import annotations

from pathlib import Path

from exporter.evaluate import EvalOptions, evaluate
from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from tests.conftest import UPSTREAM_KEY, ProxyServer
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
