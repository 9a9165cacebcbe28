"""Evaluating a model trained on a stripped export: the baseline is asked what production
sends it, the app's logged request, not a rebuild from the template (exporter/eval_baseline.py);
a rebuild, where there is no logged request, wraps every user turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.eval_baseline import with_logged_requests
from exporter.eval_cases import EvalCase, Stripped, messages_as_sent
from tests.conftest import REVIEWER_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_export_cli import run_cli
from tuneloop.errors import NotFound
from tuneloop.prompt_template import PromptTemplate, strip_messages

BASE = "gpt-4o-mini"
FT = "ft:gpt-4o-mini-2024-07-18:acme::eval"
SYSTEM = "You are Acme's support agent. Never promise refunds. " * 20
FEW = [{"role": "user", "content": "Customer says: where is order 1?\nAnswer briefly."},
       {"role": "assistant", "content": "It ships today."}]
PREFIX, SUFFIX = "Customer says: ", "\nAnswer briefly."


def conversation(n: int) -> list[dict[str, Any]]:
    """Two user turns; even apps wrap every turn in the template's affixes, odd ones only
    the newest (their history keeps what the customer typed)."""
    first = f"first thing {n}"
    return [{"role": "system", "content": SYSTEM}, *FEW,
            {"role": "user", "content": PREFIX + first + SUFFIX if n % 2 == 0 else first},
            {"role": "assistant", "content": f"answer {n}"},
            {"role": "user", "content": PREFIX + f"follow-up {n * 13}" + SUFFIX}]


def test_the_baseline_gets_the_apps_logged_request(proxy: ProxyServer, tmp_path: Path) -> None:
    admin = proxy.admin()
    admin.put_routes({"sb": {"targets": [{"model": BASE}]}})
    client, sent = proxy.openai(), {}
    for n in range(30):
        raw = client.chat.completions.with_raw_response.create(
            model="sb", messages=conversation(n))  # type: ignore[arg-type]
        sent[raw.headers["x-tuneloop-id"]] = conversation(n)
    proxy.wait_logged(30)
    reviewer = proxy.admin(REVIEWER_TOKEN)
    for interaction_id in sent:
        reviewer.review(interaction_id, "approve", reviewer="ann", expected_revision=0)
    admin.freeze_template("sb", {"system_prompt": SYSTEM, "few_shot": FEW,
                                 "user_prefix": PREFIX, "user_suffix": SUFFIX})
    out = tmp_path / "export"
    result = run_cli(proxy, tmp_path, "export", "--name", "support", "--format", "chat",
                     "--filter", "model=sb", "--strip-template", "sb-v1", "--system-prompt",
                     "Acme support.", "--validation", "0.3", "--out", str(out), "--workers", "1")
    assert result.exit_code == 0, result.output
    before = len(proxy.upstream.state.requests)
    result = run_cli(proxy, tmp_path, "evaluate", "--dataset", str(out), "--candidate", FT,
                     "--baseline", BASE, "--json", OPENAI_API_KEY=UPSTREAM_KEY)
    assert result.exit_code == 0, result.output
    asked = [r.json for r in proxy.upstream.state.requests[before:] if isinstance(r.json, dict)]
    to_baseline = [b for b in asked if b["model"] == BASE]
    to_candidate = [b for b in asked if b["model"] == FT]
    assert len(to_baseline) == len(to_candidate) >= 6
    app_requests = list(sent.values())
    for body in to_baseline:  # byte for byte what the app sent, whichever turns it wrapped
        assert body["messages"] in app_requests
    assert {len(b["messages"][3]["content"]) > len("first thing 99") for b in to_baseline} \
        == {True, False}  # both kinds of app were asked
    for body in to_candidate:  # as trained: no template, the replacement system prompt
        assert body["messages"][0] == {"role": "system", "content": "Acme support."}
        assert not any(PREFIX in str(m["content"]) for m in body["messages"])
    report = json.loads(result.output[result.output.index("{"):])
    assert report["baseline_requests"] == {"logged": len(to_baseline), "rebuilt": 0}


TEMPLATE = PromptTemplate("t", 1, system_prompt="Rules.", user_prefix=PREFIX,
                          user_suffix=SUFFIX)


def app(n: int) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Rules."},
            {"role": "user", "content": PREFIX + f"a{n}" + SUFFIX},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": PREFIX + f"b{n}" + SUFFIX}]


def test_a_rebuilt_baseline_request_wraps_every_user_turn() -> None:
    strip = Stripped(TEMPLATE, "Short.")
    stripped = strip_messages(TEMPLATE, app(1), system_prompt="Short.")
    assert messages_as_sent(stripped, strip) == app(1)
    # a content list gets the affixes back in its first and last text parts, where they were
    parts = [{"role": "system", "content": "Rules."}, {"role": "user", "content": [
        {"type": "text", "text": PREFIX + "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "at this" + SUFFIX}]}]
    assert messages_as_sent(strip_messages(TEMPLATE, parts), Stripped(TEMPLATE)) == parts


@pytest.mark.parametrize("logged", [
    None,  # the interaction is gone (forgotten)
    {"request": {"messages": app(9)}},  # not the example's (a reviewer edited the prompt)
    {"request": "not json"},
    {"request": {"messages": "nope"}},
])
def test_without_a_matching_logged_request_the_baseline_is_rebuilt(
        logged: dict[str, Any] | None) -> None:
    strip = Stripped(TEMPLATE, "Short.")
    stripped = strip_messages(TEMPLATE, app(1), system_prompt="Short.")
    case = EvalCase(1, stripped, "", "ok", source_id="ix-1",
                    as_sent=messages_as_sent(stripped, strip))

    def fetch(interaction_id: str) -> dict[str, Any]:
        if logged is None:
            raise NotFound(f"no interaction {interaction_id}")
        return logged

    cases, counts = with_logged_requests([case], strip, fetch)
    assert cases == [case] and counts is not None and counts.to_json() == {
        "logged": 0, "rebuilt": 1}
    history_as_typed = [*app(1)]  # this app wrapped only the newest turn
    history_as_typed[1] = {"role": "user", "content": "a1"}
    cases, counts = with_logged_requests([case], strip,
                                         lambda _: {"request": {"messages": history_as_typed}})
    assert cases[0].as_sent == history_as_typed and counts is not None and counts.logged == 1
