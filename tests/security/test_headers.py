"""Every response of `tuneloop serve` carries exactly one `Date` and one `Server` header (the
upstream's `Server`, the proxy's `Date`), proxied or not."""

from __future__ import annotations

from pathlib import Path

from tests.security.raw import RawResponse, exchange, json_answer, recorder, served

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
