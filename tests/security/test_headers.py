"""Every response of `tuneloop serve` carries exactly one `Date` and one `Server` header (the
upstream's `Server`, the proxy's `Date`), proxied or not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.server import open_relay_warning
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.security.raw import RawResponse, exchange, json_answer, recorder, served
from tuneloop.config import Settings

UPSTREAM_HEADERS = b"server: upstream-fake/1.0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
ANSWER = (b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}')


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


def assert_one_each(response: RawResponse | None, server: str | None) -> None:
    assert response is not None
    assert len(response.header_values("date")) == 1, response.headers
    assert response.header_values("server") == ([server] if server else []), response.headers


def test_proxied_responses_carry_one_date_and_one_server(tmp_path: Path) -> None:
    with recorder(json_answer(ANSWER, UPSTREAM_HEADERS)) as upstream, served(
        tmp_path, upstream.url + "/v1"
    ) as process:
        logged = exchange(process.url, request("POST", "/v1/chat/completions", CHAT))
        assert logged is not None and logged.status == 200
        assert_one_each(logged, "upstream-fake/1.0")
        relayed = exchange(process.url, request("GET", "/v1/files/file-1"))
        assert_one_each(relayed, "upstream-fake/1.0")
        models = exchange(process.url, request("GET", "/v1/models"))
        assert_one_each(models, "upstream-fake/1.0")
        # answers of the proxy's own: one date, and no server header to fingerprint
        ours = exchange(process.url, request("POST", "/v1/chat/completions", b"{"))
        assert ours is not None and ours.status == 400
        assert_one_each(ours, None)
        health = exchange(process.url, request("GET", "/healthz"))
        assert_one_each(health, None)


def _authorization(raw_request: bytes) -> list[bytes]:
    head = raw_request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return [line.partition(b":")[2].strip() for line in head
            if line.partition(b":")[0].strip().lower() in (b"authorization", b"api-key")]


def test_no_key_goes_to_another_origin(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder(json_answer(ANSWER)) as other:
        proxy = proxy_factory(openai_api_key=UPSTREAM_KEY)
        proxy.admin().put_routes({"their-vllm": {"targets": [
            {"model": "llama", "base_url": other.url + "/v1"}]}})
        body = b'{"model":"their-vllm","messages":[{"role":"user","content":"hi"}]}'
        keyless = exchange(proxy.url, request("POST", "/v1/chat/completions", body))
        assert keyless is not None and keyless.status == 200
        assert _authorization(other.requests[-1]) == []  # not the server's key: none
        own = request("POST", "/v1/chat/completions", body).replace(
            b"host: x\r\n", b"host: x\r\nauthorization: Bearer sk-client-own\r\n")
        answered = exchange(proxy.url, own)
        assert answered is not None and answered.status == 200
        assert _authorization(other.requests[-1]) == []  # nor the app's: only its host's
        assert all(UPSTREAM_KEY.encode() not in r for r in other.requests)
        # the default upstream still gets the server's key for keyless requests (by design)
        plain = exchange(proxy.url, request("POST", "/v1/chat/completions", CHAT))
        assert plain is not None and plain.status == 200


@pytest.mark.parametrize(("host", "key", "issue", "warned"), [
    ("0.0.0.0", "sk-server", False, True),
    ("10.1.2.3", "sk-server", False, True),
    ("proxy.internal", "sk-server", False, True),
    ("127.0.0.1", "sk-server", False, False),
    ("::1", "sk-server", False, False),
    ("localhost", "sk-server", False, False),
    ("0.0.0.0", None, False, False),
    ("0.0.0.0", "sk-server", True, False),
])
def test_serve_warns_when_anyone_can_spend_the_server_key(
    tmp_path: Path, host: str, key: str | None, issue: bool, warned: bool,
) -> None:
    settings = Settings(db=tmp_path / "t.duckdb", host=host, openai_api_key=key,
                        issue_keys=issue)
    warning = open_relay_warning(settings)
    assert (warning is not None) == warned
    if warning:
        assert host in warning and "OPENAI_API_KEY" in warning


HOSTILE = (b"Connection: keep-alive, X-Secret-Hop, OpenAI-Beta\r\nX-Secret-Hop: hop-value\r\n"
           b"OpenAI-Beta: assistants=v2\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
           b"Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\nX-Forwarded-For: 10.9.9.9\r\n"
           b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\n"
           b"Forwarded: for=1.2.3.4;host=evil.example\r\nX-Real-IP: 6.6.6.6\r\n"
           b"X-Original-URL: /admin/routes\r\nX-Rewrite-URL: /admin/routes\r\n"
           b"X-HTTP-Method-Override: DELETE\r\nCookie: session=cookie-secret\r\n"
           b"X-Goog-Api-Key: goog-secret\r\nAnthropic-Api-Key: ant-secret\r\n"
           b"X-Tuneloop-User: u1\r\nProxy-Connection: keep-alive\r\nVia: 1.1 x\r\n"
           b"Max-Forwards: 0\r\nX-Amzn-Trace-Id: t\r\nContent-Encoding: identity\r\n"
           b"OpenAI-Organization: org-1\r\nX-Stainless-Lang: python\r\n"
           b"Idempotency-Key: k-1\r\nUser-Agent: OpenAI/Python 1.0\r\n")
ALLOWED = {"host", "content-length", "content-type", "accept", "accept-encoding", "authorization",
           "openai-organization", "x-stainless-lang", "idempotency-key", "user-agent"}


def _header_names(raw_request: bytes) -> list[str]:
    head = raw_request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return [line.partition(b":")[0].strip().lower().decode() for line in head]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/files", b'{"purpose":"x"}'),
    ("GET", "/v1/files/file-1", b""),
])
def test_only_documented_headers_go_upstream(
    proxy_factory: Callable[..., ProxyServer], method: str, path: str, body: bytes,
) -> None:
    two_servers = b"server: first/1.0\r\nserver: second/2.0\r\n"
    with recorder(json_answer(ANSWER, two_servers)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        sent = request(method, path, body).replace(b"host: x\r\nconnection: close\r\n",
                                                   b"host: evil.example:9999\r\n" + HOSTILE)
        response = exchange(proxy.url, sent)
        assert response is not None and response.status == 200, response
        servers = response.header_values("server")  # (this test server adds "uvicorn")
        assert "first/1.0" in servers and "second/2.0" not in servers, servers
        [received] = upstream.requests
        names = _header_names(received)
        assert set(names) <= ALLOWED, sorted(set(names) - ALLOWED)
        assert b"evil.example" not in received and b"secret" not in received
        assert len(names) == len(set(names))
