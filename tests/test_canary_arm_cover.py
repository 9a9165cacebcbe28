"""While a canary is open, an answer does not say which arm gave it (r14e #4): conformance.

The upstream is a raw socket that writes its answers one byte per HTTP chunk (so the `"model"`
field and every event boundary are split across reads), gzipped even though the proxy asked
for identity, with the headers that name a target. What the client reads is compared byte by
byte with what the rewrite must make of it; a route without an open canary, and a model that
is no alias, get the upstream's bytes exactly.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ProxyServer
from tests.fakes.raw_http import RawUpstream, Seen, ThreadedRawUpstream

ALIAS, PLAIN_ALIAS = "support-bot", "plain-bot"
STABLE, CANDIDATE = "stable-model", "ft:candidate-model"
DIRECT = "gpt-4o-mini"
NAMING_HEADERS = (b"openai-model", b"x-ratelimit-limit-tokens", b"x-request-id")


def chunks_of(model: str) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model, "system_fingerprint": f"fp_{model}"}
    return [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


def stream_body(model: str) -> bytes:
    """An upstream stream: a comment, events (one with two data lines and an id), [DONE]."""
    first, second, last = (orjson.dumps(c) for c in chunks_of(model))
    half = len(second) // 2
    return (b": keep-alive\n\n" + b"data: " + first + b"\n\n"
            + b"id: 7\ndata: " + second[:half] + b"\ndata: " + second[half:] + b"\n\n"
            + b"data: " + last + b"\r\n\r\n" + b"data: [DONE]\n\n")


def covered_stream() -> bytes:
    """What the client must read from a covered stream, whichever arm answered."""
    def cover(chunk: dict[str, Any]) -> bytes:
        chunk = {**chunk, "model": ALIAS}
        del chunk["system_fingerprint"]
        return orjson.dumps(chunk)
    first, second, last = (cover(c) for c in chunks_of("any"))
    return (b": keep-alive\n\n" + b"data: " + first + b"\n\n" + b"id: 7\ndata: " + second
            + b"\n\n" + b"data: " + last + b"\n\n" + b"data: [DONE]\n\n")


def plain_body(model: str) -> bytes:
    return orjson.dumps({"id": "chatcmpl-2", "object": "chat.completion", "created": 1,
                         "model": model, "system_fingerprint": f"fp_{model}",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": "Hi"}}]})


async def byte_by_byte(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    request = orjson.loads(seen.body)
    model, stream = request["model"], request.get("stream") is True
    if b"BROTLI" in seen.body:  # an encoding the proxy never asks for and cannot read
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-encoding: br\r\ncontent-length: 4\r\n\r\n\x0b\x02\x80\x00")
        await writer.drain()
        return True
    if b"REFUSED" in seen.body:
        error = orjson.dumps({"error": {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": None, "code": "model_not_found"}})
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                     b"openai-model: " + model.encode() + b"\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(error), error))
        await writer.drain()
        return True
    body = gzip.compress(stream_body(model) if stream else plain_body(model))
    kind = b"text/event-stream" if stream else b"application/json"
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n"
                 b"content-type: " + kind + b"\r\nopenai-model: " + model.encode()
                 + b"\r\nx-ratelimit-limit-tokens: 150000\r\nx-request-id: req_" + model.encode()
                 + b"\r\nserver: upstream-" + model.encode() + b"\r\n\r\n")
    for index in range(len(body)):
        writer.write(b"1\r\n" + body[index:index + 1] + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.0005)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


@pytest.fixture
def raw_upstream() -> Iterator[RawUpstream]:
    with ThreadedRawUpstream(byte_by_byte) as upstream:
        yield upstream


@pytest.fixture
def canary_proxy(proxy_factory: Callable[..., ProxyServer],
                 raw_upstream: RawUpstream) -> ProxyServer:
    proxy = proxy_factory(upstream=raw_upstream.url + "/v1")
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]},
                              PLAIN_ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, CANDIDATE, canary=50)
    return proxy


def ask(proxy: ProxyServer, model: str, user: str, stream: bool,
        text: str = "hi") -> httpx.Response:
    body = {"model": model, "user": user, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    with proxy.http() as http:
        return http.post("/v1/chat/completions", json=body,
                         headers={"accept-encoding": "gzip"})


def both_arms(proxy: ProxyServer, upstream: RawUpstream, stream: bool) -> list[httpx.Response]:
    """Answers to the canary's alias until each arm gave at least one."""
    answers = []
    for n in range(40):
        answers.append(ask(proxy, ALIAS, f"user-{n}", stream))
        arms = {orjson.loads(s.body)["model"] for s in upstream.seen}
        if arms == {STABLE, CANDIDATE}:
            return answers
    raise AssertionError(f"one arm only: {arms}")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_neither_arm_is_told_byte_by_byte(canary_proxy: ProxyServer,
                                          raw_upstream: RawUpstream, stream: bool) -> None:
    answers = both_arms(canary_proxy, raw_upstream, stream)
    for answer in answers:
        assert answer.status_code == 200
        names = {name.lower() for name, _ in answer.headers.raw}
        assert not names & {*NAMING_HEADERS, b"content-encoding"}, answer.headers
        assert b"upstream-" not in answer.headers.get("server", "").encode()
        if stream:
            assert answer.content == covered_stream()
        else:
            body = orjson.loads(answer.content)
            assert body["model"] == ALIAS and "system_fingerprint" not in body
            assert body["choices"][0]["message"]["content"] == "Hi"
    # the proxy asked for no compression; the store keeps what the upstream said
    assert {s.header("accept-encoding") for s in raw_upstream.seen} == {"identity"}
    rows = [canary_proxy.row(a.headers["x-tuneloop-id"]) for a in answers]
    assert {r["response"]["model"] for r in rows} == {STABLE, CANDIDATE}
    assert {r["finish"] for r in rows} == {"completed"}  # a CRLF split across reads too


@pytest.mark.parametrize("model", [PLAIN_ALIAS, DIRECT])
def test_no_open_canary_no_rewrite(canary_proxy: ProxyServer, raw_upstream: RawUpstream,
                                   model: str) -> None:
    """Beside the canary's alias, another alias and a model name get the upstream's own bytes
    (gzipped as they came) and headers."""
    answer = ask(canary_proxy, model, "user-1", stream=True)
    assert answer.headers["content-encoding"] == "gzip"
    sent_model = orjson.loads(raw_upstream.seen[-1].body)["model"]
    assert answer.content == stream_body(sent_model)  # httpx undid the gzip
    assert answer.headers["openai-model"] == sent_model
    assert answer.headers["x-ratelimit-limit-tokens"] == "150000"
    assert raw_upstream.seen[-1].header("accept-encoding") == "gzip"
    covered = ask(canary_proxy, ALIAS, "user-1", stream=True)
    assert covered.content == covered_stream()


def test_an_error_that_names_the_target_names_the_alias(canary_proxy: ProxyServer) -> None:
    """Both arms refuse (the second opinion answers): the message names neither."""
    for n in range(6):
        answer = ask(canary_proxy, ALIAS, f"user-{n}", stream=False, text="REFUSED")
        assert answer.status_code == 404
        message = answer.json()["error"]["message"]
        assert message == f"The model `{ALIAS}` does not exist or you do not have access to it."
        assert "openai-model" not in answer.headers
        row = canary_proxy.row(answer.headers["x-tuneloop-id"])
        assert row["response"]["error"]["message"] != message  # the store keeps the truth


def test_an_answer_it_cannot_read_is_not_relayed(canary_proxy: ProxyServer) -> None:
    """Brotli (never asked for): the proxy cannot rewrite it, so it is not relayed unread."""
    answer = ask(canary_proxy, ALIAS, "user-1", stream=False, text="BROTLI")
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_encoding"
    assert "content-encoding" not in answer.headers
