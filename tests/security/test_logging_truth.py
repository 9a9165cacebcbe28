"""What is logged is what the client saw: an answer the client never received is logged
`client_disconnected` (a stream keeps only what was sent), `ttfb_ms`/`latency_ms` are the
client's, and a record that cannot be built never turns an answered request into a 5xx."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.security.raw import Answer, connect, exchange, read_response, recorder

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
ANSWER = (b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"the answer"},"finish_reason":"stop"}]}')


def post(body: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def delayed(delay_s: float, body: bytes = ANSWER) -> Answer:
    def answer(request: bytes) -> list[tuple[float, bytes]]:
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n")
        return [(delay_s, head + body)]
    return answer


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def sse(text: str, **extra: Any) -> bytes:
    event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
             **extra}
    return b"data: " + orjson.dumps(event) + b"\n\n"


def stream(pieces: list[tuple[float, bytes]], head_delay_s: float = 0.0) -> Answer:
    """An SSE answer: headers after `head_delay_s`, then each (delay, event bytes) as one
    chunk."""
    def answer(request: bytes) -> list[tuple[float, bytes]]:
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")
        return [(head_delay_s, head), *[(delay, chunk(data)) for delay, data in pieces],
                (0.0, b"0\r\n\r\n")]
    return answer


def only_row(proxy: ProxyServer, count: int = 1) -> list[dict[str, Any]]:
    proxy.wait_logged(count)
    time.sleep(0.3)  # nothing more may arrive
    ids = [r[0] for r in proxy.sql("SELECT id FROM interactions ORDER BY created_at")]
    assert len(ids) == count
    return [proxy.row(i) for i in ids]


def test_a_client_that_gave_up_before_the_answer_is_logged_client_disconnected(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder(delayed(1.5)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        with connect(proxy.url) as sock:
            sock.sendall(post(CHAT))
            time.sleep(0.3)
        [row] = only_row(proxy)
        assert row["finish"] == "client_disconnected"
        # the SDK's timeout and retry: two attempts, neither answered
        client = openai.OpenAI(base_url=proxy.base_url, api_key=UPSTREAM_KEY, timeout=0.5,
                               max_retries=1)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hi"}])
        client.close()
        rows = only_row(proxy, 3)
        assert [r["finish"] for r in rows] == ["client_disconnected"] * 3


def test_a_stream_keeps_only_what_the_client_was_sent(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    scripts = iter([
        # the whole answer arrives after the client left
        stream([(0.0, sse("never ") + sse("seen") + b"data: [DONE]\n\n")], head_delay_s=1.5),
        stream([(0.0, sse("first ")), (1.5, sse("second")), (0.0, b"data: [DONE]\n\n")]),
    ])
    with recorder(lambda request: next(scripts)(request)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        with connect(proxy.url) as sock:  # gone before the first chunk
            sock.sendall(post(STREAM))
            time.sleep(0.3)
        [row] = only_row(proxy)
        assert row["finish"] == "client_disconnected"
        assert "never" not in orjson.dumps(row["response"]).decode()
        with connect(proxy.url) as sock:  # gone after the first chunk
            sock.sendall(post(STREAM))
            received = b""
            while b"first" not in received:
                received += sock.recv(65536)
        row = only_row(proxy, 2)[1]
        assert row["finish"] == "client_disconnected"
        assert row["response"]["choices"][0]["message"]["content"] == "first ", row


def test_ttfb_and_latency_are_what_the_client_saw(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    events = [(1.0, sse("late")), (0.0, b"data: [DONE]\n\n")]
    with recorder(stream(events)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        with connect(proxy.url) as sock:
            request = post(STREAM)
            sock.sendall(request[:-20])
            time.sleep(1.0)  # the body takes a second to upload
            sock.sendall(request[-20:])
            response = read_response(sock)
            assert response is not None and b"[DONE]" in response.body
        [row] = only_row(proxy)
        assert row["finish"] == "completed"
        # the first chunk left the upstream a second after its headers, and the request
        # started arriving a second before the proxy could forward it
        assert row["ttfb_ms"] >= 1000
        assert row["latency_ms"] >= 2000


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def test_an_answer_that_cannot_be_recorded_still_reaches_the_client(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    # orjson reads 300 levels but refuses to write them back: the record can't be built
    answer = ANSWER[:-1] + b',"extra":' + deep(300) + b"}"
    usage = b'{"prompt_tokens":1,"completion_tokens":1,"extra":' + deep(300) + b"}"
    last = sse("!")[:-3] + b',"usage":' + usage + b"}\n\n"
    scripts = iter([
        delayed(0.0, answer),
        stream([(0.0, sse("hello")), (0.0, last), (0.0, b"data: [DONE]\n\n")]),
    ])
    with recorder(lambda request: next(scripts)(request)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        response = exchange(proxy.url, post(CHAT))
        assert response is not None and response.status == 200
        assert response.body == answer
        assert "x-tuneloop-id" not in dict(response.headers)
        response = exchange(proxy.url, post(STREAM))
        assert response is not None and response.status == 200
        assert response.body.endswith(b"data: [DONE]\n\n")
        metrics = proxy.http().get("/metrics").text
        assert "tuneloop_capture_failures_total 2.0" in metrics


class Hanging:
    """An upstream that sends `answer` and then waits (up to 10 s) for the proxy to close the
    connection: `closed` says whether it did."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.closed = threading.Event()
        self.asked = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            self.asked.set()
            conn.sendall(self.answer)
            try:
                while conn.recv(65536):
                    pass
                self.closed.set()
            except OSError:
                pass


@pytest.mark.parametrize("answer", [
    b"",  # no headers yet
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
], ids=["before-headers", "mid-body"])
def test_a_client_that_leaves_cancels_the_upstream_call(
    proxy_factory: Callable[..., ProxyServer], answer: bytes,
) -> None:
    upstream = Hanging(answer)
    proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY,
                          read_timeout_s=60.0)
    with connect(proxy.url) as sock:
        sock.sendall(post(CHAT))
        assert upstream.asked.wait(10)
    # the proxy stops waiting and closes that upstream connection (never pooled)
    assert upstream.closed.wait(10), "the upstream call outlived its client"
    [row] = only_row(proxy)
    assert row["finish"] == "client_disconnected"
    metrics = proxy.http().get("/metrics").text
    assert 'tuneloop_requests_total{endpoint="chat.completions",status="499"} 1.0' in metrics
    upstream.sock.close()
