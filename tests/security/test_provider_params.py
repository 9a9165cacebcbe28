"""A route to a litellm provider passes on only what OpenAI's API defines.

The attacker is an app with no credential of its own: it puts litellm keywords in the body
(`base_url`, `custom_llm_provider`, `extra_headers`, ...) to make the proxy send the server's
provider key to a host it controls. A recording listener on loopback plays that host.
"""

from __future__ import annotations

import socket
import threading
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from proxy.openai_params import CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS
from tests.conftest import ProxyServer
from tests.fakes.anthropic_upstream import FakeAnthropicState
from tests.fakes.anthropic_upstream import create_app as create_fake_anthropic
from tests.fakes.server import serve_app

SERVER_ANTHROPIC_KEY = "sk-ant-SERVER-KEY-0123456789abcdef"
SERVER_OPENAI_KEY = "sk-openai-SERVER-KEY-0123456789abcdef"
LEAKS = (SERVER_ANTHROPIC_KEY, SERVER_OPENAI_KEY, "Traceback", "site-packages", ".py\"",
         "File \"")


@dataclass
class Recorder:
    """A TCP listener that records whatever arrives and answers a bare 500."""

    url: str
    received: list[bytes] = field(default_factory=list)


@pytest.fixture
def attacker() -> Iterator[Recorder]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    recorder = Recorder(f"http://127.0.0.1:{sock.getsockname()[1]}")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    recorder.received.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield recorder
    stop.set()
    thread.join(5)
    sock.close()


@pytest.fixture
def claude(proxy_factory: Any, monkeypatch: pytest.MonkeyPatch,
           ) -> Iterator[tuple[ProxyServer, FakeAnthropicState]]:
    """A proxy whose alias `claude-alias` goes to a fake Anthropic with the server's own key
    (from the environment, as litellm reads it when the route names no key variable)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SERVER_ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_OPENAI_KEY)
    state = FakeAnthropicState()
    with serve_app(create_fake_anthropic(state)) as url:
        proxy = proxy_factory()
        proxy.admin().put_routes({"claude-alias": {"targets": [{
            "model": "claude-3-5-haiku-20241022", "provider": "anthropic", "base_url": url}]}})
        yield proxy, state


def chat(proxy: ProxyServer, **extra: Any) -> httpx.Response:
    body = {"model": "claude-alias", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16, **extra}
    return proxy.http().post("/v1/chat/completions", json=body,
                             headers={"authorization": "Bearer sk-whatever"})


def attacks(url: str) -> list[tuple[str, Any]]:
    return [
        ("base_url", url), ("api_base", url), ("custom_llm_provider", "openai"),
        ("extra_headers", {"x-injected": "1"}), ("headers", {"x-injected": "1"}),
        ("api_key", "sk-attacker"), ("api_version", "2099-01-01"),
        ("extra_body", {"injected": True}), ("aws_region_name", "us-east-1"),
        ("aws_bedrock_runtime_endpoint", url), ("vertex_project", "attacker"),
        ("vertex_location", "us-central1"), ("timeout", 0.001), ("mock_response", "pwned"),
        ("callbacks", []), ("litellm_metadata", {"a": 1}), ("litellm_call_id", "x"),
        ("input_cost_per_token", 1), ("organization", "org-attacker"),
    ]


@pytest.mark.parametrize("case", range(len(attacks(""))))
def test_litellm_keywords_in_the_body_are_refused(
    claude: tuple[ProxyServer, FakeAnthropicState], attacker: Recorder, case: int,
) -> None:
    proxy, provider = claude
    key, value = attacks(attacker.url)[case]
    answer = chat(proxy, **{key: value})
    assert attacker.received == []
    assert provider.requests == [], "nothing reaches the provider either"
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert key in error["message"] and error["code"] == "unknown_parameter"
    for leak in LEAKS:
        assert leak not in answer.text
    # the same request without the smuggled key goes to the route's host with the route's key
    fine = chat(proxy)
    assert fine.status_code == 200, fine.text
    assert fine.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert [r.headers.get("x-api-key") for r in provider.requests] == [SERVER_ANTHROPIC_KEY]
    assert "x-injected" not in provider.requests[0].headers
    assert attacker.received == []


def test_unknown_stream_options_are_refused(
    claude: tuple[ProxyServer, FakeAnthropicState], attacker: Recorder,
) -> None:
    proxy, provider = claude
    answer = chat(proxy, stream=True, stream_options={"include_usage": True,
                                                      "api_base": attacker.url})
    assert answer.status_code == 400, answer.text
    assert "stream_options.api_base" in answer.json()["error"]["message"]
    assert provider.requests == [] and attacker.received == []


def test_every_parameter_of_the_openai_sdk_is_allowed() -> None:
    from openai.types import completion_create_params, embedding_create_params
    from openai.types.chat import completion_create_params as chat_params

    def keys(cls: Any) -> set[str]:
        return set(typing.get_type_hints(cls))

    assert keys(chat_params.CompletionCreateParamsBase) | {"stream"} <= CHAT_COMPLETIONS
    assert keys(completion_create_params.CompletionCreateParamsBase) | {"stream"} <= COMPLETIONS
    assert keys(embedding_create_params.EmbeddingCreateParams) <= EMBEDDINGS


def test_unreachable_provider_error_has_no_traceback_or_path(
    proxy_factory: Any, attacker: Recorder, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SERVER_ANTHROPIC_KEY)
    proxy = proxy_factory()
    proxy.admin().put_routes({"claude-alias": {"targets": [{
        "model": "claude-3-5-haiku-20241022", "provider": "anthropic",
        "base_url": attacker.url}]}})
    answer = chat(proxy)
    assert answer.status_code >= 500
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for leak in LEAKS:
        assert leak not in answer.text
    assert len(error["message"]) < 200, error["message"]
    assert "litellm" not in error["message"].lower()


def test_provider_error_is_a_status_and_a_short_message(
    claude: tuple[ProxyServer, FakeAnthropicState],
) -> None:
    proxy, _ = claude
    read = proxy.admin().routes_with_seq()
    proxy.admin().put_routes({"claude-alias": {"targets": [{
        "model": "fail-400", "provider": "anthropic",
        "base_url": read["routes"]["claude-alias"]["targets"][0]["base_url"]}]}},
        expect_seq=read["seq"])
    answer = chat(proxy)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    for leak in LEAKS:
        assert leak not in answer.text
    assert "litellm" not in error["message"].lower()
    assert "Exception" not in error["message"]


def test_a_provider_stream_cut_midway_ends_with_a_clean_error(
    claude: tuple[ProxyServer, FakeAnthropicState],
) -> None:
    proxy, _ = claude
    url = proxy.admin().routes()["claude-alias"]["targets"][0]["base_url"]
    proxy.admin().put_routes({"claude-alias": {"targets": [{
        "model": "cut-2", "provider": "anthropic", "base_url": url}]}},
        expect_seq=proxy.admin().routes_with_seq()["seq"])
    body = {"model": "claude-alias", "messages": [{"role": "user", "content": "hi there you"}],
            "max_tokens": 16, "stream": True}
    with proxy.http().stream("POST", "/v1/chat/completions", json=body,
                             headers={"authorization": "Bearer sk-whatever"}) as answer:
        assert answer.status_code == 200
        interaction_id = answer.headers["x-tuneloop-id"]
        text = "".join(answer.iter_text())
    for leak in LEAKS:
        assert leak not in text
    assert '"code":"upstream_cut"' in text.replace(" ", ""), text[-500:]
    row = proxy.row(interaction_id)
    assert row["finish"] == "upstream_cut"
    for leak in LEAKS:
        assert leak not in (row["error"] or "")
