"""Per-target request transforms (proxy/transforms.py): each target of a route gets its own
version of the request; the baseline gets the app's request as sent; the row keeps both."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from exporter.evaluate import EvalOptions, evaluate
from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from exporter.strip import TemplateStrip
from proxy.promotion import parse_promote_request, promoted_spec
from proxy.routing import RouteSpec
from storage.prompt_templates import freeze_template
from storage.store import migrate_store, open_store
from tests.conftest import (
    ADMIN_TOKEN,
    UPSTREAM_KEY,
    FakeUpstream,
    ProxyServer,
    proxy_settings,
    serve_proxy,
)
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.cli import main
from tuneloop.errors import BadRequest

BASE = "gpt-4o-mini-2024-07-18"
FT = "ft:gpt-4o-mini-2024-07-18:acme::strip"
LEGACY_BASE = "davinci-002"
LEGACY_FT = "ft:davinci-002:acme::v1"
SYSTEM = "You are the support bot of ACME. " * 40
FEW_SHOT = [{"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "Let me look that up for you."}]
PREFIX = "Customer question: "
DEAD = "http://127.0.0.1:9/v1"
PARTS = {"system_prompt": SYSTEM, "few_shot": FEW_SHOT, "user_prefix": PREFIX}


def app_messages(question: str, system: str = SYSTEM) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, *FEW_SHOT,
            {"role": "user", "content": PREFIX + question}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    """One proxy and fake upstream for the module (each test uses its own alias)."""
    tmp = tmp_path_factory.mktemp("transforms")
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as upstream_url:
        upstream = FakeUpstream(upstream_url, state)
        settings = proxy_settings(tmp, upstream.base_url)
        db = open_store(settings.db)
        migrate_store(db)
        db.write_sync(lambda con: freeze_template(con, {"name": "support-bot", "parts": PARTS},
                                                  "test"))
        db.write_sync(lambda con: freeze_template(con, {
            "name": "qa-legacy", "parts": {"prompt_prefix": "Answer briefly.\n"}}, "test"))
        db.close()
        with serve_proxy(settings) as url:
            proxy = ProxyServer(url, settings, upstream)
            yield proxy
            proxy.close()


def sent_to(proxy: ProxyServer, model: str) -> list[dict[str, Any]]:
    return [r.json for r in proxy.upstream.state.requests
            if isinstance(r.json, dict) and r.json.get("model") == model]


def put_route(proxy: ProxyServer, alias: str, spec: dict[str, Any]) -> None:
    read = proxy.admin().routes_with_seq()
    proxy.admin().put_routes({**read["routes"], alias: spec}, expect_seq=read["seq"])


def ask(proxy: ProxyServer, alias: str, question: str, **extra: Any) -> str:
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model=alias, messages=app_messages(question, **extra))  # type: ignore[arg-type]
    return raw.headers["x-tuneloop-id"]


def test_a_canary_strips_the_template_for_the_fine_tuned_model_only(server: ProxyServer) -> None:
    put_route(server, "bot-a", {"targets": [{"model": BASE}]})
    result = server.admin().promote("bot-a", FT, canary=50, strip_template="support-bot")
    candidate = result["spec"]["targets"][1]
    assert candidate["transforms"] == [{"type": "strip_template", "template": "support-bot-v1"}]
    assert "transforms" not in result["spec"]["targets"][0]
    ids = {ask(server, "bot-a", f"question {n}"): n for n in range(24)}
    stripped = sent_to(server, FT)
    full = [b for b in sent_to(server, BASE) if b["messages"][-1]["content"].startswith(PREFIX)]
    assert stripped and full and len(stripped) + len(full) == len(ids)
    for body in stripped:  # only what varies: the question
        assert len(body["messages"]) == 1 and body["messages"][0]["role"] == "user"
        assert body["messages"][0]["content"].startswith("question ")
    for body in full:  # the baseline: exactly what the app sent, apart from the model
        number = int(body["messages"][-1]["content"].rsplit(" ", 1)[1])
        assert body["messages"] == app_messages(f"question {number}")
    rows = collections.Counter[str]()
    for interaction_id in ids:
        row = server.row(interaction_id)
        assert row["request"]["messages"][0]["content"] == SYSTEM  # what the app sent
        rows[row["upstream_model"]] += 1
        if row["upstream_model"] == FT:
            assert row["sent_request"]["model"] == FT
            assert row["sent_request"]["messages"] == [
                {"role": "user", "content": row["request"]["messages"][-1]["content"][
                    len(PREFIX):]}]
        else:
            assert row["sent_request"] is None
    assert rows[FT] == len(stripped) and rows[BASE] == len(full)


def test_a_request_without_the_template_goes_to_its_target_unstripped_and_is_counted(
    server: ProxyServer,
) -> None:
    put_route(server, "bot-b", {"targets": [{"model": FT + "-b", "transforms": [
        {"type": "strip_template", "template": "support-bot-v1"},
        {"type": "replace_system_prompt", "system_prompt": "ACME support."}]}]})
    ask(server, "bot-b", "matching")
    assert sent_to(server, FT + "-b")[-1]["messages"] == [
        {"role": "system", "content": "ACME support."},
        {"role": "user", "content": "matching"}]
    changed = "You are the NEW support bot of ACME."
    interaction_id = ask(server, "bot-b", "changed app", system=changed)
    body = sent_to(server, FT + "-b")[-1]
    assert body["messages"] == app_messages("changed app", system=changed)  # unstripped
    row = server.row(interaction_id)
    assert row["route"]["template_mismatch"] == "system_prompt"
    assert row["sent_request"] is None
    metrics = server.http().get("/metrics").text
    line = next(m for m in metrics.splitlines()
                if m.startswith("tuneloop_template_mismatches_total{") and "bot-b" in m)
    assert 'template="support-bot-v1"' in line and line.endswith(" 1.0")


def test_the_legacy_separator_and_stop_reach_only_the_legacy_target(
    server: ProxyServer, tmp_path: Path,
) -> None:
    put_route(server, "qa", {"targets": [{"model": LEGACY_BASE}]})
    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.json").write_bytes(orjson.dumps({
        "manifest_version": 1, "format": "legacy", "prompt_separator": "\n\n###\n\n",
        "stop": "###", "files": {}}))
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": server.url}
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "promote", "--alias", "qa", "--model", LEGACY_FT,
        "--canary", "50", "--from-export", str(export)], env=env)
    assert result.exit_code == 0, result.output
    client = server.openai()
    for n in range(24):
        client.completions.create(model="qa", prompt=f"What is DuckDB? {n}")
    legacy, base = sent_to(server, LEGACY_FT), sent_to(server, LEGACY_BASE)
    assert legacy and base
    assert all(b["prompt"].startswith("What is DuckDB? ") and b["prompt"].endswith(
        "\n\n###\n\n") and b["prompt"].count("###") == 1 for b in legacy)
    assert all(b["stop"] == "###" for b in legacy)
    assert all("###" not in b["prompt"] and "stop" not in b for b in base)


def test_cli_promote_strip_template(server: ProxyServer, tmp_path: Path) -> None:
    put_route(server, "bot-c", {"targets": [{"model": BASE}]})
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": server.url}
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "promote", "--alias", "bot-c", "--model",
        FT + "-c", "--canary", "10", "--strip-template", "support-bot-v1"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{BASE} 90%, {FT}-c 10% [strip support-bot-v1]" in result.output
    spec = server.admin().routes()["bot-c"]
    assert spec["targets"][1]["transforms"] == [
        {"type": "strip_template", "template": "support-bot-v1"}]
    assert "transforms" not in spec["targets"][0]


@pytest.mark.parametrize(("transforms", "message"), [
    ([{"type": "strip_template", "template": "no-such-template-v1"}], "unknown template"),
    ([{"type": "strip_template", "template": "support-bot-v1"},
      {"type": "legacy_separator", "separator": "\n\n###\n\n"}], "either chat or legacy"),
    ([{"type": "replace_system_prompt", "system_prompt": "x"},
      {"type": "legacy_separator", "separator": "###"}], "either chat or legacy"),
    ([{"type": "stop", "stop": "###"}, {"type": "stop", "stop": "END"}], "more than once"),
    ([{"type": "legacy_separator", "separator": ""}], "separator"),
    ([{"type": "rewrite_everything"}], "transforms.0"),
])
def test_bad_transforms_are_refused(server: ProxyServer, transforms: list[Any],
                                    message: str) -> None:
    before = server.admin().routes()
    with pytest.raises(BadRequest) as refused:
        put_route(server, "bad", {"targets": [{"model": FT, "transforms": transforms}]})
    assert message in str(refused.value)
    assert server.admin().routes() == before


def test_promoting_with_an_unknown_template_is_refused(server: ProxyServer) -> None:
    put_route(server, "bot-d", {"targets": [{"model": BASE}]})
    response = httpx.post(f"{server.url}/admin/routes/bot-d/promote",
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                          json={"model": FT, "canary": 10, "strip_template": "nope-v3"})
    assert response.status_code == 400
    assert "unknown template 'nope-v3'" in response.json()["error"]["message"]
    assert [t["model"] for t in server.admin().routes()["bot-d"]["targets"]] == [BASE]


def test_a_legacy_template_is_stripped_from_a_completion_prompt(server: ProxyServer) -> None:
    put_route(server, "qa-t", {"targets": [{"model": LEGACY_FT + "-t", "transforms": [
        {"type": "strip_template", "template": "qa-legacy-v1"},
        {"type": "legacy_separator", "separator": "\n\n###\n\n"}]}]})
    server.openai().completions.create(model="qa-t", prompt="Answer briefly.\nWhy?")
    assert sent_to(server, LEGACY_FT + "-t")[-1]["prompt"] == "Why?\n\n###\n\n"
    # what `export --strip-template qa-legacy-v1 --system-prompt ...` trained it on
    put_route(server, "qa-t", {"targets": [{"model": LEGACY_FT + "-t", "transforms": [
        {"type": "strip_template", "template": "qa-legacy-v1"},
        {"type": "replace_system_prompt", "system_prompt": "Be brief. "},
        {"type": "legacy_separator", "separator": "\n\n###\n\n"}]}]})
    server.openai().completions.create(model="qa-t", prompt="Answer briefly.\nWhy?")
    assert sent_to(server, LEGACY_FT + "-t")[-1]["prompt"] == "Be brief. Why?\n\n###\n\n"


def test_promoting_onto_a_route_with_route_level_markers_keeps_what_each_target_gets() -> None:
    """A spec stored before per-target transforms (or restored by a rollback to then)."""
    current = RouteSpec.model_validate({"targets": [{"model": LEGACY_BASE}],
                                        "prompt_suffix": "\n\n###\n\n", "stop": "###"})
    spec = promoted_spec("qa", current, parse_promote_request(
        {"model": LEGACY_FT, "canary": 10, "prompt_suffix": "\n\nEND\n\n"}))
    assert spec.prompt_suffix is None and spec.stop is None
    dumped = spec.model_dump(exclude_none=True)
    assert dumped["targets"][0]["transforms"] == [
        {"type": "legacy_separator", "separator": "\n\n###\n\n"}, {"type": "stop", "stop": "###"}]
    assert dumped["targets"][1]["transforms"] == [
        {"type": "legacy_separator", "separator": "\n\nEND\n\n"}]


def test_evaluation_sends_the_candidate_the_stripped_request_and_the_baseline_the_apps(
    server: ProxyServer, tmp_path: Path,
) -> None:
    """What the gate compares is what production will send each model."""
    template = server.admin().prompt_template("support-bot-v1")
    examples = [Example(f"ix-{i:03d}", [*app_messages(f"eval question {i}"), {
        "role": "assistant", "content": f"echo: eval question {i}"}]) for i in range(30)]
    out = tmp_path / "stripped"
    export(examples, out, ExportOptions(name="support", validation_fraction=0.3, workers=1,
                                        strip=TemplateStrip(template, "ACME support.")))
    candidate, baseline = FT + "-eval", BASE + "-eval"
    evaluate(server.admin(), out, EvalOptions(candidate, baseline), api_key=UPSTREAM_KEY)
    to_candidate, to_baseline = sent_to(server, candidate), sent_to(server, baseline)
    assert to_candidate and len(to_candidate) == len(to_baseline)
    for body in to_candidate:
        system, question = body["messages"]
        assert system == {"role": "system", "content": "ACME support."}
        assert question["content"].startswith("eval question ")
    for body in to_baseline:
        question = body["messages"][-1]["content"].removeprefix(PREFIX)
        assert body["messages"] == app_messages(question)


def test_a_fallback_gets_its_own_transforms_not_the_primarys(server: ProxyServer) -> None:
    """Transforms belong to a target: when the primary is down, the fallback gets the app's
    request (it has none), and the row's sent_request says what it got (nothing changed)."""
    put_route(server, "bot-f", {"targets": [{"model": FT + "-f", "base_url": DEAD, "transforms": [
        {"type": "strip_template", "template": "support-bot-v1"}]}],
        "fallbacks": [{"model": BASE + "-f"}]})
    interaction_id = ask(server, "bot-f", "primary is down")
    assert sent_to(server, BASE + "-f")[-1]["messages"] == app_messages("primary is down")
    row = server.row(interaction_id)
    assert row["upstream_model"] == BASE + "-f" and row["sent_request"] is None


def test_evaluation_asks_the_current_model_with_its_own_route_transforms(
    server: ProxyServer, tmp_path: Path,
) -> None:
    """The second cycle of a legacy alias: the current model is itself a legacy fine-tune that
    its route gives a separator and stop; the gate must ask it that way too."""
    current = "ft:davinci-002:acme::current"
    put_route(server, "qa-cur", {"targets": [{"model": current, "transforms": [
        {"type": "legacy_separator", "separator": "\n\n###\n\n"},
        {"type": "stop", "stop": "###"}]}]})
    examples = [Example(f"lx-{i:03d}", [{"role": "user", "content": f"Legacy question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}])
                for i in range(30)]
    out = tmp_path / "legacy"
    export(examples, out, ExportOptions(name="qa", validation_fraction=0.3, workers=1,
                                        format=FormatOptions("legacy"),
                                        base_model="davinci-002"))
    evaluate(server.admin(), out, EvalOptions(LEGACY_FT + "-next", current),
             api_key=UPSTREAM_KEY)
    asked = sent_to(server, current)
    assert asked and all(b["prompt"].startswith("Legacy question ") and b["prompt"].endswith(
        "\n\n###\n\n") and b["stop"] == "###" for b in asked)
