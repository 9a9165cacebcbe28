"""Templates from traffic, end to end (issue 13): apps send a long system prompt, few-shot turns
and a fixed user prefix/suffix through the proxy (official openai SDK, fake upstream); the
template is found with the right share and token count, frozen as versions through the CLI,
and the export without it holds no template text and passes the chat validator.

One proxy (DuckDB) serves the whole module; the storage side runs on both stores in
tests/test_prompt_templates_store.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette

from exporter.checks import chat_row_problems
from proxy.app import create_app
from tests.conftest import (
    ADMIN_TOKEN,
    REVIEWER_TOKEN,
    FakeUpstream,
    ProxyServer,
    proxy_settings,
)
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.cli import main
from tuneloop.errors import Forbidden, Unauthorized
from tuneloop.tokenizers import load_encoding

ALIAS, LEGACY_ALIAS = "support-bot", "qa-bot"
SYSTEM = "\n".join(
    f"Rule {i}: you are Acme's support agent; quote the carrier and tracking number, never "
    "promise a refund without a ticket, and answer in two short sentences. ¿Sí? 日本"
    for i in range(40)
)
FEW_SHOT = [
    {"role": "user", "content": "Customer says:\nWhere is my order 1?\nAnswer briefly."},
    {"role": "assistant", "content": "Your order 1 ships with DHL, tracking DE-0001-EXAMPLE."},
    {"role": "user", "content": "Customer says:\nCan I return shoes?\nAnswer briefly."},
    {"role": "assistant", "content": "Yes, within 30 days, printing the label from Orders."},
]
PREFIX, SUFFIX = "Customer says:\n", "\nAnswer briefly."
QUESTIONS = [
    "My parcel is late", "Can I change my address?", "Why was I charged twice?", "Login fails",
    "Where is the invoice", "Password reset", "Do you ship to Spain?", "Bulk discount?",
    "Cancel my order", "Is the blue mug in stock?", "The box arrived broken", "Gift wrapping?",
    "Which carrier do you use?", "My coupon is refused", "Change the delivery day",
    "I got the wrong size", "Is there a warranty?", "Delete my account", "Pay by invoice?",
    "Talk to a human",
]
OTHER = [f"Unrelated prompt {i}: be terse." for i in range(4)]  # 4 of 24 don't match
ARTICLE_PREFIX, ARTICLE_SUFFIX = "Article:\n", "\n\n###\nWrite three questions about it."
REPLY = "We are looking into it and will write back today."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyServer, Starlette]]:
    tmp = tmp_path_factory.mktemp("templates")
    state = FakeOpenAIState()
    state.model_replies.update({"gpt-4o-mini": REPLY, "davinci-002": REPLY})
    with serve_app(create_fake_openai(state)) as upstream_url:
        upstream = FakeUpstream(upstream_url, state)
        # discovery in a thread, not a fresh worker process per call (seconds each): the
        # process path is tested in tests/test_prompt_discovery.py
        settings = proxy_settings(tmp, upstream.base_url, index_worker_min_rows=0)
        app = create_app(settings)
        with serve_app(app) as url:
            proxy = ProxyServer(url, settings, upstream)
            proxy.admin().put_routes({ALIAS: {"targets": [{"model": "gpt-4o-mini"}]},
                                      LEGACY_ALIAS: {"targets": [{"model": "davinci-002"}]}})
            _send_traffic(proxy)
            yield proxy, app
            proxy.close()


@pytest.fixture(scope="module")
def server(served: tuple[ProxyServer, Starlette]) -> ProxyServer:
    return served[0]


def _send_traffic(proxy: ProxyServer) -> None:
    client = proxy.openai()
    ids = []
    for question in QUESTIONS:
        messages: list[Any] = [{"role": "system", "content": SYSTEM}, *FEW_SHOT,
                               {"role": "user", "content": PREFIX + question + SUFFIX}]
        raw = client.chat.completions.with_raw_response.create(model=ALIAS, messages=messages)
        ids.append(raw.headers["x-tuneloop-id"])
    for other in OTHER:
        raw = client.chat.completions.with_raw_response.create(
            model=ALIAS, messages=[{"role": "system", "content": other},
                                   {"role": "user", "content": "Where is my parcel?"}])
        ids.append(raw.headers["x-tuneloop-id"])
    for question in QUESTIONS[:12]:
        raw_legacy = client.completions.with_raw_response.create(
            model=LEGACY_ALIAS, prompt=f"{ARTICLE_PREFIX}{question}.{ARTICLE_SUFFIX}",
            max_tokens=20)
        ids.append(raw_legacy.headers["x-tuneloop-id"])
    proxy.wait_logged(len(ids))
    reviewer = proxy.admin(REVIEWER_TOKEN)
    for interaction_id in ids:
        reviewer.review(interaction_id, "approve", reviewer="ann", expected_revision=0)


def run_cli(proxy: ProxyServer, tmp_path: Path, *args: str, token: str = ADMIN_TOKEN) -> Result:
    env = {"TUNELOOP_ADMIN_TOKEN": token if token == ADMIN_TOKEN else None,
           "TUNELOOP_REVIEWER_TOKEN": token if token != ADMIN_TOKEN else None,
           "TUNELOOP_API": proxy.url}
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), *args], env=env,
                              catch_exceptions=False)


def tokens(text: str) -> int:
    return len(load_encoding("o200k_base").encode(text))


def test_the_template_is_found_with_its_share_and_token_count(server: ProxyServer) -> None:
    found = server.admin(REVIEWER_TOKEN).template_candidates(ALIAS)
    assert found["sample"] == {"chat": 24, "legacy": 0}
    assert found["tokenizer_model"] == "gpt-4o-mini"
    best = found["candidates"][0]
    assert best["parts"] == {"system_prompt": SYSTEM, "few_shot": FEW_SHOT,
                             "user_prefix": PREFIX, "user_suffix": SUFFIX,
                             "prompt_prefix": "", "prompt_suffix": ""}
    assert best["matched"] == 20 and best["share"] == round(20 / 24, 4)
    assert best["part_tokens"] == {
        "system_prompt": tokens(SYSTEM) + 3,
        "few_shot": sum(tokens(t["content"]) + 3 for t in FEW_SHOT),
        "user_prefix": tokens(PREFIX),
        "user_suffix": tokens(SUFFIX),
    }
    assert best["tokens"] > 1000
    # at a 90% threshold the system prompt (20 of 24) is not shared enough
    strict = server.admin(REVIEWER_TOKEN).template_candidates(ALIAS, threshold=0.9)
    assert all(c["parts"]["system_prompt"] is None for c in strict["candidates"])
    legacy = server.admin().template_candidates(LEGACY_ALIAS)["candidates"][0]
    assert legacy["kind"] == "legacy" and legacy["share"] == 1.0
    assert legacy["parts"]["prompt_prefix"] == ARTICLE_PREFIX
    assert legacy["parts"]["prompt_suffix"] == ARTICLE_SUFFIX


def test_discovery_reads_within_a_byte_budget(server: ProxyServer, tmp_path: Path) -> None:
    """The bodies read add up to at most `max_bytes`, newest first; the answer says what was
    left out, so a cut sample is never silent."""
    whole = server.admin(REVIEWER_TOKEN).template_candidates(ALIAS)
    assert whole["read"]["rows"] == 24 and whole["read"]["over_budget"] == 0
    answer = server.http().get(
        "/admin/template-candidates", params={"alias": ALIAS, "max_bytes": 30_000},
        headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert answer.status_code == 200, answer.text
    cut = answer.json()
    assert 0 < cut["read"]["rows"] < 24 and cut["read"]["bytes"] <= 30_000
    assert cut["read"]["over_budget"] == 24 - cut["read"]["rows"]
    assert cut["sample"]["chat"] == cut["read"]["rows"]
    noted = run_cli(server, tmp_path, "templates", "--alias", ALIAS, "--max-bytes", "30000",
                    token=REVIEWER_TOKEN)
    assert noted.exit_code == 0, noted.output
    assert f"note: {cut['read']['over_budget']} older requests left out" in noted.output
    too_big = server.http().get(
        "/admin/template-candidates", params={"alias": ALIAS, "max_bytes": 10**12},
        headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "max_bytes"


def test_a_second_discovery_while_one_runs_is_told_busy(
    served: tuple[ProxyServer, Starlette]
) -> None:
    """One discovery at a time per server: a second one is answered 429 at once, not queued
    behind the first (each one holds up to its byte budget in memory)."""
    proxy, app = served
    lock = app.state.ctx.discovery_lock
    assert lock.acquire(blocking=False)  # as a running discovery holds it
    try:
        answer = proxy.http().get("/admin/template-candidates", params={"alias": ALIAS},
                                  headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    finally:
        lock.release()
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "too_many_requests"
    assert "already running" in answer.json()["error"]["message"]
    assert proxy.admin(REVIEWER_TOKEN).template_candidates(ALIAS)["sample"]["chat"] == 24


def test_a_candidate_no_longer_offered_is_not_frozen(server: ProxyServer,
                                                     tmp_path: Path) -> None:
    """Freezing names the candidate by the hash of what was shown; when discovery (run again
    on the server) no longer offers it, nothing is frozen, rather than whatever is candidate N
    now. Here: shown at threshold 0.8, frozen at 0.9 (where the system prompt is not shared
    enough), as if the traffic had changed in between."""
    shown = server.admin(REVIEWER_TOKEN).template_candidates(ALIAS)["candidates"][0]
    stale = run_cli(server, tmp_path, "templates", "--alias", ALIAS, "--threshold", "0.9",
                    "--freeze", "stale", "--candidate", shown["id"])
    assert stale.exit_code == 5, stale.output
    assert f"candidate {shown['id']} is no longer offered for {ALIAS}" in stale.output
    assert all(t["name"] != "stale" for t in server.admin().templates())


HOSTILE_FREEZES: list[dict[str, Any]] = [
    {"name": "h", "parts": {"system_prompt": "x"}, "tokens": 1e20},
    {"name": "h", "parts": {"system_prompt": "x"}, "share": 1.0},
    {"name": "h", "parts": {"system_prompt": "x"}, "sample_size": 10},
    {"name": "h", "parts": {"few_shot": [{"role": "user", "content": [1, 2]}]}},
    {"name": "h", "parts": {"few_shot": [{"role": "user", "content": "a", "name": 7}]}},
    {"name": "h", "parts": {"few_shot": [{"role": "user", "content": "a", "extra": 1}]}},
    {"name": "h", "parts": {"few_shot": "hi"}},
    {"name": "h", "parts": {"user_prefix": 5}},
    {"name": "h", "candidate": "abc"},
    {"name": "h", "candidate": "0123456789ab"},  # no alias
    {"name": "h", "alias": ALIAS, "candidate": "0123456789ab", "limit": 10**30},
    {"name": "h", "alias": ALIAS, "candidate": "0123456789ab", "threshold": 0.1},
    {"name": "h"},
    {"name": "h-v2", "parts": {"system_prompt": "x"}},
]


def test_hostile_freeze_bodies_get_a_400_and_store_nothing(server: ProxyServer) -> None:
    http = server.http()
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    for body in HOSTILE_FREEZES:
        answer = http.post("/admin/templates", json=body, headers=headers)
        assert answer.status_code == 400, (body, answer.text)
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], body
    assert all(t["name"] != "h" for t in server.admin().templates())
    # parts written by hand: the tokens are the server's count, the share unknown
    made = http.post("/admin/templates", headers=headers, json={
        "name": "by-hand", "alias": ALIAS, "parts": {"system_prompt": SYSTEM}}).json()
    assert made["share"] is None and made["sample_size"] is None
    assert made["tokens"] == len(load_encoding("cl100k_base").encode(SYSTEM)) + 3


def test_the_frozen_list_is_paged_never_cut_silently(server: ProxyServer) -> None:
    admin = server.admin()
    for n in range(205):
        admin.freeze_template(f"paged-{n:03d}", {"system_prompt": f"Prompt {n}."}, alias="paged")
    assert len(admin.templates("paged")) == 205  # the client follows the pages
    first = server.http().get("/admin/templates", params={"alias": "paged"},
                              headers={"authorization": f"Bearer {REVIEWER_TOKEN}"}).json()
    assert len(first["items"]) == 200 and first["next_offset"] == 200
    last = server.http().get("/admin/templates", params={"alias": "paged", "offset": 200},
                             headers={"authorization": f"Bearer {REVIEWER_TOKEN}"}).json()
    assert [t["name"] for t in last["items"]] == [f"paged-{n}" for n in range(200, 205)]
    assert last["next_offset"] is None


def test_a_candidate_few_requests_share_is_not_frozen(server: ProxyServer,
                                                      tmp_path: Path) -> None:
    """Forget leaves templates alone because a template is text many requests share; text
    only a handful share could be one user's, so it is not frozen from traffic."""
    client = server.openai()
    for n in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "Ann's private notes: allergic to penicillin."},
            {"role": "user", "content": f"Question {n}: what should I take?"}])
    server.wait_logged(len(QUESTIONS) + len(OTHER) + 12 + 3)
    shown = server.admin().template_candidates("gpt-4o-mini")["candidates"][0]
    assert shown["matched"] == 3
    refused = run_cli(server, tmp_path, "templates", "--alias", "gpt-4o-mini", "--freeze",
                      "ann", "--candidate", shown["id"])
    assert refused.exit_code == 5 and "matches 3 requests" in refused.output
    assert all(t["name"] != "ann" for t in server.admin().templates())


def test_only_the_admin_freezes_and_a_reviewer_reads(server: ProxyServer) -> None:
    with pytest.raises(Forbidden):
        server.admin(REVIEWER_TOKEN).freeze_template("sneaky", {"system_prompt": "x"})
    answer = httpx.get(f"{server.url}/admin/templates")
    assert answer.status_code == 401 and answer.json()["error"]["type"]
    with pytest.raises(Unauthorized):
        server.admin("wrong-token").template_candidates(ALIAS)
    assert all(t["name"] != "sneaky" for t in server.admin(REVIEWER_TOKEN).templates())


def test_bad_discovery_parameters_are_refused(server: ProxyServer) -> None:
    http = server.http()
    headers = {"authorization": f"Bearer {REVIEWER_TOKEN}"}
    for query in ("", "?alias=x&threshold=0.1", "?alias=x&limit=0", "?alias=x&limit=5001",
                  "?alias=x&threshold=abc"):
        answer = http.get(f"/admin/template-candidates{query}", headers=headers)
        assert answer.status_code == 400, query
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_cli_lists_freezes_versions_and_exports_without_the_template(
    server: ProxyServer, tmp_path: Path
) -> None:
    listed = run_cli(server, tmp_path, "templates", "--alias", ALIAS, token=REVIEWER_TOKEN)
    assert listed.exit_code == 0, listed.output
    assert "[1] chat: matches 83.3% (20)" in listed.output
    assert "few-shot turns: 4" in listed.output
    assert "left out" not in listed.output  # the whole sample was read
    found = server.admin(REVIEWER_TOKEN).template_candidates(ALIAS)["candidates"]
    first_id, second_id = found[0]["id"], found[1]["id"]
    assert f"id {first_id}" in listed.output
    refused = run_cli(server, tmp_path, "templates", "--alias", ALIAS, "--freeze", ALIAS,
                      "--candidate", first_id, token=REVIEWER_TOKEN)
    assert refused.exit_code == Forbidden.exit_code
    first = run_cli(server, tmp_path, "templates", "--alias", ALIAS, "--freeze", ALIAS,
                    "--candidate", first_id)
    assert first.exit_code == 0 and f"froze support-bot-v1 from candidate {first_id}" in (
        first.output)
    again = run_cli(server, tmp_path, "templates", "--alias", ALIAS, "--freeze", ALIAS,
                    "--candidate", second_id)
    assert f"froze support-bot-v2 from candidate {second_id}" in again.output
    assert server.admin().template("support-bot-v2")["parts"] == found[1]["parts"]
    missing = run_cli(server, tmp_path, "templates", "--alias", ALIAS, "--freeze", ALIAS)
    assert missing.exit_code == 2 and "--candidate ID" in missing.output
    frozen = run_cli(server, tmp_path, "templates")
    assert "support-bot-v2" in frozen.output and "support-bot-v1" in frozen.output
    shown = json.loads(run_cli(server, tmp_path, "templates", "--show", "support-bot-v1").output)
    assert shown["parts"]["few_shot"] == FEW_SHOT and shown["share"] == round(20 / 24, 4)

    out = tmp_path / "support"
    result = run_cli(server, tmp_path, "export", "--name", "support", "--format", "chat",
                     "--filter", f"model={ALIAS}", "--strip-template", "support-bot-v1",
                     "--system-prompt", "Acme support.", "--out", str(out), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "template_mismatch (4)" in result.output
    data = (out / "train.jsonl").read_bytes() + (out / "validation.jsonl").read_bytes()
    for text in (SYSTEM.splitlines()[3], FEW_SHOT[1]["content"], "Customer says:",
                 "Answer briefly."):
        assert json.dumps(text, ensure_ascii=False)[1:-1].encode() not in data, text
    rows = [json.loads(line) for line in data.splitlines()]
    assert len(rows) == 20
    assert {r["messages"][1]["content"] for r in rows} == set(QUESTIONS)
    for row in rows:
        assert row["messages"][0] == {"role": "system", "content": "Acme support."}
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert chat_row_problems(row) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["template"] == {"ref": "support-bot-v1",
                                    "replacement_system_prompt": "Acme support.",
                                    "mismatches": {"system_prompt": 4}}
    assert manifest["counts"]["skipped"] == {"template_mismatch": 4}
    lineage = [json.loads(x) for x in (out / "lineage.jsonl").read_text().splitlines()]
    skipped = [r["skipped"] for r in lineage if r["split"] == "skipped"]
    assert skipped == ["template_mismatch:system_prompt"] * 4  # what differed, per example


def test_legacy_export_without_the_prompt_template(server: ProxyServer, tmp_path: Path) -> None:
    best = server.admin().template_candidates(LEGACY_ALIAS)["candidates"][0]["id"]
    frozen = run_cli(server, tmp_path, "templates", "--alias", LEGACY_ALIAS, "--freeze", "qa",
                     "--candidate", best)
    assert "froze qa-v1" in frozen.output, frozen.output
    out = tmp_path / "qa"
    result = run_cli(server, tmp_path, "export", "--name", "qa", "--format", "legacy",
                     "--filter", f"model={LEGACY_ALIAS}", "--strip-template", "qa",
                     "--base-model", "davinci-002",
                     "--out", str(out), "--workers", "1")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for split in ("train", "validation")
            for line in (out / f"{split}.jsonl").read_text().splitlines()]
    assert sorted(row["prompt"] for row in rows) == sorted(
        f"{question}.\n\n###\n\n" for question in QUESTIONS[:12])


def test_export_refuses_an_unknown_template_and_a_lone_system_prompt(
    server: ProxyServer, tmp_path: Path
) -> None:
    unknown = run_cli(server, tmp_path, "export", "--name", "x", "--strip-template", "nope-v1",
                      "--out", str(tmp_path / "x"))
    assert unknown.exit_code == 4 and "no prompt template 'nope-v1'" in unknown.output
    lone = run_cli(server, tmp_path, "export", "--name", "x", "--system-prompt", "hi",
                   "--out", str(tmp_path / "x"))
    assert lone.exit_code == 2 and "--strip-template" in lone.output
    assert not (tmp_path / "x").exists()
