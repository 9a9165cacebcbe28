"""Hostile and odd requests to a target that strips a template (outsider review r13 #1, #3, #6):
a malformed message list, a /v1/responses request, a batched legacy prompt. Each reaches its
target as the app sent it (or stripped, when every part holds the template), is counted as a
template mismatch with its reason, and never makes the proxy answer 500 nor breaks template
discovery. A stop value OpenAI refuses is refused when the route is set (r13 #8). Real proxy
and fake upstream on loopback, raw httpx and the openai SDK as clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from storage.prompt_templates import freeze_template
from storage.store import migrate_store, open_store
from tests.conftest import (
    ADMIN_TOKEN,
    REVIEWER_TOKEN,
    UPSTREAM_KEY,
    FakeUpstream,
    ProxyServer,
    last_sent,
    proxy_settings,
    serve_proxy,
)
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.cli import main

FT = "ft:gpt-4o-mini-2024-07-18:acme::hostile"
LEGACY_FT = "ft:davinci-002:acme::hostile"
SYSTEM = "You are the support bot of ACME. Answer in one short paragraph. " * 10
PREFIX, SUFFIX = "Q: ", "\nA:"
SYS = {"role": "system", "content": SYSTEM}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    tmp = tmp_path_factory.mktemp("hostile")
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as upstream_url:
        upstream = FakeUpstream(upstream_url, state)
        settings = proxy_settings(tmp, upstream.base_url, index_worker_min_rows=0)
        db = open_store(settings.db)
        migrate_store(db)
        for name, parts in (
                ("wrapped", {"system_prompt": SYSTEM, "user_prefix": PREFIX,
                             "user_suffix": SUFFIX}),
                ("bare", {"user_prefix": PREFIX}),
                ("qa", {"prompt_prefix": "Answer briefly.\n", "prompt_suffix": SUFFIX})):
            db.write_sync(lambda con, n=name, p=parts: freeze_template(
                con, {"name": n, "parts": p}, "test"))
        db.close()
        with serve_proxy(settings) as url:
            proxy = ProxyServer(url, settings, upstream)
            routes = {
                alias: {"targets": [{"model": model, "transforms": [
                    {"type": "strip_template", "template": template}, *extra]}]}
                for alias, model, template, extra in (
                    ("wrapped-bot", FT, "wrapped-v1", [{"type": "stop", "stop": "END"}]),
                    ("bare-bot", FT + "-bare", "bare-v1", []),
                    ("qa-bot", LEGACY_FT, "qa-v1", [
                        {"type": "legacy_separator", "separator": "\n\n###\n\n"}]))}
            routes["replace-bot"] = {"targets": [{"model": FT + "-rp", "transforms": [
                {"type": "strip_template", "template": "wrapped-v1"},
                {"type": "replace_system_prompt", "system_prompt": "ACME."}]}]}
            routes["replace-only-bot"] = {"targets": [{"model": FT + "-rponly", "transforms": [
                {"type": "replace_system_prompt", "system_prompt": "ACME."}]}]}
            proxy.admin().put_routes(routes)
            yield proxy
            proxy.close()


def post(proxy: ProxyServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return proxy.http().post(path, json=body, headers={"authorization": f"Bearer {UPSTREAM_KEY}"})


def wrapped_user(*parts: object) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


MALFORMED: dict[str, tuple[str, list[Any]]] = {
    "a string message": ("bare-bot", ["hello"]),
    "a string after the system prompt": ("wrapped-bot", [SYS, "hello"]),
    "a number after the system prompt": ("wrapped-bot", [SYS, 5]),
    "null after the system prompt": ("wrapped-bot", [SYS, None]),
    "a message without a role": ("wrapped-bot", [SYS, {"content": PREFIX + "hi" + SUFFIX}]),
    "a text part without text": ("wrapped-bot", [SYS, wrapped_user(
        {"type": "text", "text": PREFIX + "a"}, {"type": "text"},
        {"type": "text", "text": "b" + SUFFIX})]),
    "a text part with null text": ("wrapped-bot", [SYS, wrapped_user(
        {"type": "text", "text": PREFIX + "a"}, {"type": "text", "text": None},
        {"type": "text", "text": "b" + SUFFIX})]),
    "a part that is not an object": ("wrapped-bot", [SYS, wrapped_user(
        {"type": "text", "text": PREFIX + "a"}, "zz", {"type": "text", "text": "b" + SUFFIX})]),
    "a first part without text": ("wrapped-bot", [SYS, wrapped_user(
        {"type": "text", "text": 7}, {"type": "text", "text": "b" + SUFFIX})]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_message_list_reaches_the_target_as_sent_and_is_counted(
    server: ProxyServer, case: str,
) -> None:
    """Never our 500: the target gets the messages exactly as the app sent them (the upstream
    judges them, as it does for the baseline), and the row says `malformed`."""
    alias, messages = MALFORMED[case]
    model = FT if alias == "wrapped-bot" else FT + "-bare"
    response = post(server, "/v1/chat/completions", {"model": alias, "messages": messages})
    assert response.status_code == 200, response.text
    sent = last_sent(server, model)
    assert sent["messages"] == messages
    assert sent.get("stop") == ("END" if alias == "wrapped-bot" else None)
    row = server.row(response.headers["x-tuneloop-id"])
    assert row["status_code"] == 200 and row["error"] is None
    assert row["route"]["template_mismatch"] == "malformed"


def test_a_well_formed_request_is_still_stripped(server: ProxyServer) -> None:
    messages = [SYS, wrapped_user({"type": "text", "text": PREFIX + "where is "},
                                  {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                                  {"type": "text", "text": "my parcel" + SUFFIX})]
    response = post(server, "/v1/chat/completions", {"model": "wrapped-bot", "messages": messages})
    assert response.status_code == 200, response.text
    assert last_sent(server, FT)["messages"] == [wrapped_user(
        {"type": "text", "text": "where is "}, messages[1]["content"][1],
        {"type": "text", "text": "my parcel"})]


def test_discovery_skips_and_counts_rows_it_cannot_read(server: ProxyServer) -> None:
    """Malformed rows among an alias's logged requests: discovery still answers, counts them in
    `read.skipped`, and finds the template in the rest."""
    read = server.admin().routes_with_seq()
    server.admin().put_routes({**read["routes"],
                               "plain-bot": {"targets": [{"model": "gpt-4o-mini"}]}},
                              expect_seq=read["seq"])
    client = server.openai()
    for n in range(12):
        client.chat.completions.create(model="plain-bot", messages=[
            SYS, {"role": "user", "content": f"{PREFIX}question {n}?{SUFFIX}"}])
    odd: list[Any] = [[SYS, "hello"], [SYS, 5], [SYS, None], [{"content": "x"}],
                      [SYS, wrapped_user({"type": "text"})]]
    for messages in odd:
        assert post(server, "/v1/chat/completions",
                    {"model": "plain-bot", "messages": messages}).status_code == 200
    server.wait_for("SELECT count(*) FROM interactions WHERE route->>'alias' = 'plain-bot'",
                    lambda rows: rows[0][0] >= 12 + len(odd))
    response = server.http().get("/admin/template-candidates", params={"alias": "plain-bot"},
                                 headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["read"]["skipped"] == 4  # the text part without text is read (well formed)
    assert found["sample"]["chat"] == 12 + 1
    assert found["candidates"][0]["parts"]["system_prompt"] == SYSTEM


def test_a_responses_request_is_stripped_in_its_own_shape(server: ProxyServer) -> None:
    """/v1/responses: the template's system prompt comes out of `instructions`, the prefix and
    suffix out of the input (a string stays a string; parts keep their type); typed items
    (function_call_output) stay in place; no `stop` (the Responses API has none)."""
    raw = server.openai().responses.with_raw_response.create(
        model="wrapped-bot", instructions=SYSTEM, input=f"{PREFIX}where is my parcel?{SUFFIX}")
    sent = last_sent(server, FT)
    assert "instructions" not in sent and "stop" not in sent
    assert sent["input"] == "where is my parcel?"
    row = server.row(raw.headers["x-tuneloop-id"])
    assert "template_mismatch" not in row["route"]
    assert row["sent_request"]["input"] == "where is my parcel?"
    assert row["request"]["instructions"] == SYSTEM
    output = {"type": "function_call_output", "call_id": "call_1", "output": "in transit"}
    items = [{"role": "system", "content": SYSTEM}, output, {"role": "user", "content": [
        {"type": "input_text", "text": f"{PREFIX}and now?{SUFFIX}"}]}]
    response = post(server, "/v1/responses", {"model": "wrapped-bot", "input": items})
    assert response.status_code == 200, response.text
    assert last_sent(server, FT)["input"] == [output, {"role": "user", "content": [
        {"type": "input_text", "text": "and now?"}]}]


@pytest.mark.parametrize(("extra", "part"), [
    ({"previous_response_id": "resp_123"}, "responses_api"),
    ({"input": [SYS, 5]}, "malformed"),
    ({"instructions": "You are another bot."}, "system_prompt"),
])
def test_a_responses_request_that_cannot_be_stripped_is_counted_not_sent_whole_silently(
    server: ProxyServer, extra: dict[str, Any], part: str,
) -> None:
    """Context the proxy can't see (previous_response_id), a malformed input, another system
    prompt: sent as the app sent it, and the row and the metric say so."""
    body = {"model": "wrapped-bot", "instructions": SYSTEM,
            "input": f"{PREFIX}where is my parcel?{SUFFIX}", **extra}
    response = post(server, "/v1/responses", body)
    assert response.status_code < 500, response.text
    sent = last_sent(server, FT)
    assert sent == {**body, "model": FT}
    row = server.row(response.headers["x-tuneloop-id"])
    assert row["route"]["template_mismatch"] == part
    assert row["sent_request"] is None
    metrics = server.http().get("/metrics").text
    assert any(line.startswith("tuneloop_template_mismatches_total{") and "wrapped-bot" in line
               for line in metrics.splitlines())


def test_a_batched_legacy_prompt_is_stripped_element_by_element(server: ProxyServer) -> None:
    """`prompt: [str, str]` (two completions): each element is stripped and gets the separator;
    when one does not hold the template, none is stripped (a mismatch), each gets the separator
    as a single unstripped prompt does."""
    prompts = [f"Answer briefly.\nWhat is {x}?{SUFFIX}" for x in ("DuckDB", "Postgres")]
    raw = server.openai().completions.with_raw_response.create(model="qa-bot", prompt=prompts)
    assert last_sent(server, LEGACY_FT)["prompt"] == [
        "What is DuckDB?\n\n###\n\n", "What is Postgres?\n\n###\n\n"]
    assert "template_mismatch" not in server.row(raw.headers["x-tuneloop-id"])["route"]
    mixed = [prompts[0], "Something else entirely"]
    raw = server.openai().completions.with_raw_response.create(model="qa-bot", prompt=mixed)
    assert last_sent(server, LEGACY_FT)["prompt"] == [p + "\n\n###\n\n" for p in mixed]
    assert server.row(raw.headers["x-tuneloop-id"])["route"]["template_mismatch"] == "prefix"


@pytest.mark.parametrize(("where", "stop", "message"), [
    ("transform", ["a", "b", "c", "d", "e"], "1 to 4 strings"),
    ("transform", [""], "must not be empty"),
    ("transform", ["END", ""], "must not be empty"),
    ("route", ["a", "b", "c", "d", "e"], "1 to 4 strings"),
    ("route", [""], "must not be empty"),
])
def test_a_stop_value_openai_refuses_is_refused_at_the_admin_api(
    server: ProxyServer, where: str, stop: list[str], message: str,
) -> None:
    """OpenAI takes a string or up to 4 strings, none empty: a route that would make every
    request to its target fail is refused (400), the table unchanged."""
    before = server.admin().routes()
    target: dict[str, Any] = {"model": FT}
    spec: dict[str, Any] = {"targets": [target]}
    if where == "transform":
        target["transforms"] = [{"type": "stop", "stop": stop}]
    else:
        spec["stop"] = stop
    response = server.http().put("/admin/routes", json={**before, "stops": spec},
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert server.admin().routes() == before


def test_four_stop_sequences_are_accepted(server: ProxyServer) -> None:
    stop = ["END", "###", "\n\n", "Q:"]
    read = server.admin().routes_with_seq()
    server.admin().put_routes({**read["routes"], "four": {"targets": [
        {"model": FT + "-four", "transforms": [{"type": "stop", "stop": stop}]}]}},
        expect_seq=read["seq"])
    post(server, "/v1/chat/completions", {"model": "four", "messages": [
        {"role": "user", "content": "hi"}]})
    assert last_sent(server, FT + "-four")["stop"] == stop


def test_the_cli_refuses_a_route_file_with_five_stop_sequences(
    server: ProxyServer, tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.json"
    routes.write_bytes(orjson.dumps({**server.admin().routes(), "cli-stops": {"targets": [
        {"model": FT, "transforms": [{"type": "stop", "stop": list("abcde")}]}]}}))
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": server.url}
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "routes", "set",
                                       str(routes)], env=env)
    assert result.exit_code == 2, result.output
    assert "1 to 4 strings" in result.output
    assert "cli-stops" not in server.admin().routes()


SYSTEM_TARGETS = {"wrapped-bot": FT, "replace-bot": FT + "-rp",
                  "replace-only-bot": FT + "-rponly"}


@pytest.mark.parametrize("alias", list(SYSTEM_TARGETS))
@pytest.mark.parametrize("extra", [{"name": 5}, {"name": None}, {"cache_control": {"x": 1}},
                                   {"name": "acme", "weird": True}])
def test_a_system_message_openai_refuses_reaches_the_target_as_sent(
        server: ProxyServer, alias: str, extra: dict[str, Any]) -> None:
    """A template system prompt (or the one replace_system_prompt replaces) carrying a key the
    chat API does not define, or a name that is not a string: the baseline is refused, so the
    fine-tune gets the messages as sent too (not a valid, stripped body), a mismatch."""
    messages = [{**SYS, **extra}, {"role": "user", "content": PREFIX + "hi" + SUFFIX}]
    response = post(server, "/v1/chat/completions", {"model": alias, "messages": messages})
    assert response.status_code < 500, response.text
    assert last_sent(server, SYSTEM_TARGETS[alias])["messages"] == messages
    row = server.row(response.headers["x-tuneloop-id"])
    assert row["route"]["template_mismatch"] == "malformed"


def test_a_system_messages_valid_name_is_kept_by_the_replacement(server: ProxyServer) -> None:
    messages = [{**SYS, "name": "acme"}, {"role": "user", "content": PREFIX + "hi" + SUFFIX}]
    for alias, sent in (("replace-bot", [{"role": "system", "content": "ACME.", "name": "acme"},
                                         {"role": "user", "content": "hi"}]),
                        ("replace-only-bot", [{"role": "system", "content": "ACME.",
                                               "name": "acme"}, messages[1]]),
                        ("wrapped-bot", [{"role": "user", "content": "hi"}])):
        raw = server.openai().chat.completions.with_raw_response.create(
            model=alias, messages=messages)  # type: ignore[arg-type]
        assert last_sent(server, SYSTEM_TARGETS[alias])["messages"] == sent
        assert "template_mismatch" not in server.row(raw.headers["x-tuneloop-id"])["route"]


def test_a_responses_system_item_is_checked_as_the_responses_api_defines_it(
        server: ProxyServer) -> None:
    """/v1/responses: a system input item may say `type: message` (stripped as before); a key
    the API does not define for it (`name`) sends the request as the app sent it."""
    user = {"role": "user", "content": f"{PREFIX}where?{SUFFIX}"}
    for alias in ("replace-bot", "replace-only-bot"):
        good = {"model": alias, "input": [{**SYS, "type": "message"}, user]}
        response = post(server, "/v1/responses", good)
        assert response.status_code == 200, response.text
        sent = last_sent(server, SYSTEM_TARGETS[alias])
        assert sent != {**good, "model": SYSTEM_TARGETS[alias]}
        assert "template_mismatch" not in server.row(response.headers["x-tuneloop-id"])["route"]
        bad = {"model": alias, "input": [{**SYS, "name": "acme"}, user]}
        response = post(server, "/v1/responses", bad)
        assert response.status_code < 500, response.text
        assert last_sent(server, SYSTEM_TARGETS[alias]) == {**bad, "model": SYSTEM_TARGETS[alias]}
        row = server.row(response.headers["x-tuneloop-id"])
        assert row["route"]["template_mismatch"] == "malformed"
