"""Outsider review r13b #5 and #6. A legacy request with `echo` to a target that strips a
template (or appends a separator) is sent as the app sent it, counted as a mismatch `echo`:
its answer starts with the prompt, which must be the one the app sent. `replace_system_prompt`
without a template: a `/v1/responses` request without `instructions` gets the replacement in
`instructions` (its input untouched); a chat message list the OpenAI API refuses (`[]`, not
objects) reaches the target as sent (mismatch `malformed`), like the baseline's; a
`/v1/responses` request without `input` is a mismatch `input`. Real proxy and fake upstream on
loopback, the openai SDK (raw httpx for shapes the SDK won't send)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from storage.prompt_templates import freeze_template
from storage.store import migrate_store, open_store
from tests.conftest import (
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

LEGACY_FT = "ft:davinci-002:acme::echo"
SEP_FT = "ft:davinci-002:acme::sep"
CHAT_FT = "ft:gpt-4o-mini-2024-07-18:acme::rp"
BARE_FT = "ft:gpt-4o-mini-2024-07-18:acme::bare"
PREFIX, SUFFIX = "Article:\n", "\n\n###\nWrite three questions about it."
SEPARATOR = "\n\n###\n\n"
PROMPT = PREFIX + "topic" + SUFFIX


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    tmp = tmp_path_factory.mktemp("echo")
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as upstream_url:
        upstream = FakeUpstream(upstream_url, state)
        settings = proxy_settings(tmp, upstream.base_url)
        db = open_store(settings.db)
        migrate_store(db)
        for name, parts in (("qa", {"prompt_prefix": PREFIX, "prompt_suffix": SUFFIX}),
                            ("bare", {"user_prefix": "Q: "})):
            db.write_sync(lambda con, n=name, p=parts: freeze_template(
                con, {"name": n, "parts": p}, "test"))
        db.close()
        with serve_proxy(settings) as url:
            proxy = ProxyServer(url, settings, upstream)
            proxy.admin().put_routes({
                "qa": {"targets": [{"model": LEGACY_FT, "transforms": [
                    {"type": "strip_template", "template": "qa-v1"},
                    {"type": "legacy_separator", "separator": SEPARATOR},
                    {"type": "stop", "stop": " END"}]}]},
                "sep": {"targets": [{"model": SEP_FT, "transforms": [
                    {"type": "legacy_separator", "separator": SEPARATOR}]}]},
                "rp": {"targets": [{"model": CHAT_FT, "transforms": [
                    {"type": "replace_system_prompt", "system_prompt": "Acme."}]}]},
                "bare": {"targets": [{"model": BARE_FT, "transforms": [
                    {"type": "strip_template", "template": "bare-v1"},
                    {"type": "replace_system_prompt", "system_prompt": "Acme."}]}]}})
            yield proxy
            proxy.close()


def mismatch(proxy: ProxyServer, interaction_id: str) -> Any:
    return proxy.row(interaction_id)["route"].get("template_mismatch")


def post(proxy: ProxyServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return proxy.http().post(path, json=body, headers={"authorization": f"Bearer {UPSTREAM_KEY}"})


def test_echo_returns_the_prompt_the_app_sent(server: ProxyServer) -> None:
    raw = server.openai().completions.with_raw_response.create(
        model="qa", prompt=PROMPT, max_tokens=5, echo=True)
    assert raw.parse().choices[0].text.startswith(PROMPT + " ")
    sent = last_sent(server, LEGACY_FT)
    assert sent["prompt"] == PROMPT and sent["stop"] == " END"  # the stop echoes nothing
    assert mismatch(server, raw.headers["x-tuneloop-id"]) == "echo"


def test_streamed_echo_returns_the_prompt_the_app_sent(server: ProxyServer) -> None:
    stream = server.openai().completions.create(
        model="qa", prompt=[PROMPT, PREFIX + "other" + SUFFIX], max_tokens=5, echo=True,
        stream=True)
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts[0].startswith(PROMPT) and texts[1].startswith(PREFIX + "other" + SUFFIX)
    assert last_sent(server, LEGACY_FT)["prompt"] == [PROMPT, PREFIX + "other" + SUFFIX]


def test_echo_to_a_separator_only_target_gets_no_separator(server: ProxyServer) -> None:
    raw = server.openai().completions.with_raw_response.create(
        model="sep", prompt="topic", max_tokens=5, echo=True)
    assert raw.parse().choices[0].text.startswith("topic ")
    assert last_sent(server, SEP_FT)["prompt"] == "topic"
    assert mismatch(server, raw.headers["x-tuneloop-id"]) == "echo"


def test_without_echo_the_prompt_is_still_stripped(server: ProxyServer) -> None:
    raw = server.openai().completions.with_raw_response.create(
        model="qa", prompt=PROMPT, max_tokens=5, echo=False)
    assert last_sent(server, LEGACY_FT)["prompt"] == "topic" + SEPARATOR
    assert mismatch(server, raw.headers["x-tuneloop-id"]) is None


def test_responses_replacement_goes_to_instructions(server: ProxyServer) -> None:
    server.openai().responses.create(model="rp", input="hi")
    sent = last_sent(server, CHAT_FT)
    assert sent["instructions"] == "Acme." and sent["input"] == "hi"
    items = [{"role": "user", "content": "hi"}]
    server.openai().responses.create(model="rp", input=items)  # type: ignore[arg-type]
    sent = last_sent(server, CHAT_FT)
    assert sent["instructions"] == "Acme." and sent["input"] == items


def test_responses_replacement_after_a_template_without_system_prompt(
        server: ProxyServer) -> None:
    server.openai().responses.create(model="bare", input="Q: hi")
    sent = last_sent(server, BARE_FT)
    assert sent["instructions"] == "Acme." and sent["input"] == "hi"


@pytest.mark.parametrize("messages", [[], [5], {"role": "user"}, [{"role": "system"}],
                                      [{"role": "system", "content": 5}]])
def test_chat_replace_only_refused_messages_reach_the_target_as_sent(
        server: ProxyServer, messages: Any) -> None:
    answer = post(server, "/v1/chat/completions", {"model": "rp", "messages": messages})
    assert answer.status_code < 500
    assert last_sent(server, CHAT_FT)["messages"] == messages
    assert mismatch(server, answer.headers["x-tuneloop-id"]) == "malformed"


@pytest.mark.parametrize(("body", "part"), [
    ({}, "input"), ({"input": {"role": "user"}}, "malformed"), ({"input": 5}, "malformed"),
    ({"input": [{"role": "developer", "content": 5}]}, "malformed")])
def test_responses_without_a_readable_input_names_the_part(
        server: ProxyServer, body: dict[str, Any], part: str) -> None:
    answer = post(server, "/v1/responses", {"model": "rp", **body})
    assert answer.status_code < 500
    sent = last_sent(server, CHAT_FT)
    assert sent.get("input") == body.get("input") and "instructions" not in sent
    assert mismatch(server, answer.headers["x-tuneloop-id"]) == part
