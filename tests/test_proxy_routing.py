"""Aliases, canary weights, sticky users, fallbacks, per-route timeouts and litellm providers."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores, one_store
from tests.fakes.anthropic_upstream import FakeAnthropicState
from tests.fakes.anthropic_upstream import create_app as create_fake_anthropic
from tests.fakes.server import serve_app

pytestmark = both_stores

DEAD = "http://127.0.0.1:9/v1"


def ask(client: openai.OpenAI, model: str, user: str | None = None, text: str = "hi") -> Any:
    headers = {"x-tuneloop-user": user} if user else {}
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers
    )


def upstream_models(proxy: ProxyServer) -> collections.Counter[str]:
    return collections.Counter(
        r.json["model"] for r in proxy.upstream.state.requests
        if r.path == "/v1/chat/completions"
    )


def test_alias_goes_to_its_target_and_the_route_is_logged(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"support-bot": {"targets": [{"model": "gpt-4o-mini-2024-07-18"}]}})
    raw = ask(proxy.openai(), "support-bot")
    assert raw.parse().choices[0].message.content == "echo: hi"
    assert proxy.upstream.state.requests[-1].json["model"] == "gpt-4o-mini-2024-07-18"
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["model"] == "support-bot"
    assert row["upstream_model"] == "gpt-4o-mini-2024-07-18"
    assert row["route"]["alias"] == "support-bot"
    assert row["route"]["target"] == "gpt-4o-mini-2024-07-18"
    assert row["request"]["model"] == "support-bot"  # as the app sent it


@one_store
def test_canary_weights_are_honoured_over_many_requests(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"bot": {"targets": [
        {"model": "gpt-4o-mini", "weight": 80},
        {"model": "ft:gpt-4o-mini-2024-07-18:acme::canary", "weight": 20},
    ]}})
    client = proxy.openai()
    total = 600
    for _ in range(total):
        ask(client, "bot")
    counts = upstream_models(proxy)
    canary_share = counts["ft:gpt-4o-mini-2024-07-18:acme::canary"] / total
    # binomial(600, 0.2): sd ≈ 0.016, so ±0.07 is over 4 sd
    assert 0.13 < canary_share < 0.27, counts


@one_store
def test_canary_is_sticky_per_user(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"bot": {"targets": [
        {"model": "gpt-4o-mini", "weight": 50}, {"model": "gpt-4o-mini-2024-07-18", "weight": 50},
    ]}})
    client = proxy.openai()
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for user in [f"user-{n}" for n in range(20)]:
        for _ in range(5):
            raw = ask(client, "bot", user=user)
            seen[user].add(raw.parse().model)
    assert all(len(models) == 1 for models in seen.values())
    assert len(set().union(*seen.values())) == 2  # both targets got users


def test_fallback_on_connection_error(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"bot": {
        "targets": [{"model": "primary", "base_url": DEAD}],
        "fallbacks": [{"model": "gpt-4o-mini"}],
    }})
    raw = ask(proxy.openai(), "bot")
    assert raw.status_code == 200
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["upstream_model"] == "gpt-4o-mini"
    assert row["route"]["role"] == "fallback" and row["route"]["attempt"] == 1


@one_store
def test_fallback_on_5xx_in_order(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"bot": {
        "targets": [{"model": "fail-503"}],
        "fallbacks": [{"model": "fail-500"}, {"model": "gpt-4o-mini"}],
    }})
    raw = ask(proxy.openai(), "bot")
    assert raw.status_code == 200
    assert [r.json["model"] for r in proxy.upstream.state.requests] == [
        "fail-503", "fail-500", "gpt-4o-mini"]


@one_store
def test_last_5xx_is_passed_through_when_every_target_fails(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"bot": {"targets": [{"model": "fail-503"}],
                                      "fallbacks": [{"model": "fail-500"}]}})
    with pytest.raises(openai.InternalServerError) as caught:
        ask(proxy.openai(), "bot")
    assert caught.value.status_code == 500


@one_store
def test_no_fallback_on_4xx(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"bot": {"targets": [{"model": "fail-429"}],
                                      "fallbacks": [{"model": "gpt-4o-mini"}]}})
    with pytest.raises(openai.RateLimitError):
        ask(proxy.openai(), "bot")
    assert len(proxy.upstream.state.requests) == 1


@one_store
def test_per_route_read_timeout(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"slow-bot": {"targets": [{"model": "slow-1500"}],
                                           "read_timeout_s": 0.3}})
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy.openai(), "slow-bot")
    assert caught.value.status_code == 504
    ask(proxy.openai(), "slow-200")  # not an alias: the global 10 s timeout applies


def test_routes_reload_without_restart_and_survive_one(proxy_factory: Any) -> None:
    first = proxy_factory()
    admin = first.admin()
    admin.put_routes({"bot": {"targets": [{"model": "gpt-4o-mini"}]}})
    ask(first.openai(), "bot")
    admin.put_routes({"bot": {"targets": [{"model": "gpt-4o-mini-2024-07-18"}]}},
                     expect_seq=admin.routes_with_seq()["seq"])
    assert ask(first.openai(), "bot").parse().model == "gpt-4o-mini-2024-07-18"
    history = admin.request("GET", "/admin/routes/history", params={"alias": "bot"})["items"]
    assert [h["action"] for h in history] == ["replace", "replace"]
    assert history[0]["spec"]["targets"][0]["model"] == "gpt-4o-mini-2024-07-18"


@one_store
@pytest.mark.parametrize(
    "table",
    [
        {"bot": {"targets": []}},
        {"bot": {"targets": [{"model": "m", "provider": "nope"}]}},
        {"bot": {"targets": [{"model": "m", "weight": -1}]}},
        {"bot": {"targets": [{"model": "m", "base_url": "ftp://x"}]}},
        {"bot": {"targets": [{"model": "m"}], "surprise": 1}},
        ["not", "an", "object"],
    ],
)
def test_invalid_route_tables_are_refused(proxy: ProxyServer, table: Any) -> None:
    with proxy.http() as http:
        response = http.put("/admin/routes", json=table,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert proxy.admin().routes() == {}


@pytest.fixture
def fake_anthropic() -> Iterator[tuple[str, FakeAnthropicState]]:
    state = FakeAnthropicState()
    with serve_app(create_fake_anthropic(state)) as url:
        yield url, state


def test_anthropic_through_litellm_stream_and_not(
    proxy_factory: Any, fake_anthropic: tuple[str, FakeAnthropicState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, state = fake_anthropic
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test-key")
    proxy = proxy_factory()
    proxy.admin().put_routes({"claude": {"targets": [{
        "model": "claude-3-5-haiku-20241022", "provider": "anthropic", "base_url": url,
        "api_key_env": "TEST_ANTHROPIC_KEY"}]}})
    client = proxy.openai()
    raw = ask(client, "claude", text="bonjour")
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: bonjour"
    assert state.requests[-1].path == "/v1/messages"
    assert state.requests[-1].headers.get("x-api-key") == "sk-ant-test-key"
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["provider"] == "anthropic"
    assert row["prompt_tokens"] == completion.usage.prompt_tokens

    with client.chat.completions.with_streaming_response.create(
        model="claude", stream=True, messages=[{"role": "user", "content": "stream it"}],
        stream_options={"include_usage": True},
    ) as streamed:
        interaction_id = streamed.headers["x-tuneloop-id"]
        text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert text == "echo: stream it"
    row = proxy.row(interaction_id)
    assert row["finish"] == "completed"
    assert row["response"]["choices"][0]["message"]["content"] == "echo: stream it"


@one_store
def test_anthropic_errors_keep_their_status(
    proxy_factory: Any, fake_anthropic: tuple[str, FakeAnthropicState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = fake_anthropic
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test-key")
    proxy = proxy_factory()
    proxy.admin().put_routes({"claude": {"targets": [{
        "model": "fail-429", "provider": "anthropic", "base_url": url,
        "api_key_env": "TEST_ANTHROPIC_KEY"}]}})
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.openai().chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}],
        )
    assert caught.value.status_code == 429
    body = caught.value.response.json()
    assert body["error"]["message"]


@one_store
def test_legacy_route_adds_separator_and_stop(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"qa-legacy": {
        "targets": [{"model": "davinci-002"}], "prompt_suffix": "\n\n###\n\n", "stop": "###"}})
    proxy.openai().completions.create(model="qa-legacy", prompt="What is DuckDB?")
    sent = proxy.upstream.state.requests[-1].json
    assert sent["prompt"] == "What is DuckDB?\n\n###\n\n"
    assert sent["stop"] == "###"
    proxy.openai().completions.create(model="qa-legacy", prompt="Again\n\n###\n\n", stop="END")
    sent = proxy.upstream.state.requests[-1].json
    # the route's stop is the model's trained one: always sent, the app's added after it
    assert sent["prompt"] == "Again\n\n###\n\n" and sent["stop"] == ["###", "END"]
