"""The pooled HTTP/1.1 client of the logged endpoints, against real servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.http1 import Http1Pool
from proxy.reply import Timeouts
from tests.fakes.server import free_port, serve_app

ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "compressed " * 50}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 50, "total_tokens": 53}}


class OneShotServer:
    """Answers the first request of each connection, then drops the connection when a second
    request arrives on it without answering: an idle keep-alive connection the server closed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            if served:
                writer.close()
                return
            body = b'{"ok": true}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            served += 1

    def __enter__(self) -> OneShotServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop).result(5)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_a_connection_the_server_closed_is_retried_once_on_a_fresh_one() -> None:
    """Only because the request may be repeated (an Idempotency-Key); a bare POST is not resent
    (tests/test_http1_conformance.py)."""
    async def scenario(port: int) -> list[bytes]:
        pool = Http1Pool()
        bodies = []
        for number in range(3):
            reply = await pool.send("POST", f"http://127.0.0.1:{port}/v1/x",
                                    {"idempotency-key": f"k-{number}"}, b"{}", Timeouts(2, 2))
            bodies.append(await reply.read())
            reply.release()
        pool.close()
        return bodies

    with OneShotServer() as server:
        assert asyncio.run(scenario(server.port)) == [b'{"ok": true}'] * 3
        assert server.connections == 3  # each reuse failed cleanly and was redone once


def test_unreachable_and_timeouts_are_domain_errors() -> None:
    from tuneloop.errors import UpstreamTimeout, UpstreamUnreachable

    async def unreachable() -> None:
        await Http1Pool().send("POST", "http://127.0.0.1:9/v1/x", {}, b"{}", Timeouts(1, 1))

    with pytest.raises(UpstreamUnreachable):
        asyncio.run(unreachable())

    async def silent(port: int) -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        async with server:
            await Http1Pool().send("POST", f"http://127.0.0.1:{port}/v1/x", {}, b"{}",
                                   Timeouts(1, 0.2))

    with pytest.raises(UpstreamTimeout):
        asyncio.run(silent(free_port()))


@pytest.fixture
def gzip_upstream() -> Iterator[str]:
    async def chat(request: Request) -> Response:
        return Response(orjson.dumps(ANSWER), media_type="application/json",
                        headers={"x-request-id": "req_gz"})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])],
                    middleware=[Middleware(GZipMiddleware, minimum_size=10)])
    with serve_app(app) as url:
        yield url + "/v1"


def test_compressed_answers_are_relayed_compressed_and_logged_decoded(
    proxy_factory: Any, gzip_upstream: str
) -> None:
    proxy = proxy_factory(upstream=gzip_upstream)
    with httpx.Client(base_url=proxy.url) as http:
        response = http.post("/v1/chat/completions", headers={"accept-encoding": "gzip"},
                             json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        with http.stream("POST", "/v1/chat/completions", headers={"accept-encoding": "gzip"},
                         json={"model": "m", "messages": []}) as streamed:
            raw = b"".join(streamed.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == ANSWER
    assert orjson.loads(gzip.decompress(raw)) == ANSWER  # the bytes as the upstream sent them
    row = proxy.row(response.headers["x-tuneloop-id"])
    assert row["response"] == ANSWER and row["completion_tokens"] == 50


def test_a_stream_that_stalls_past_the_read_timeout_is_cut_and_logged(proxy_factory: Any
                                                                     ) -> None:
    proxy = proxy_factory(read_timeout_s=0.3)
    proxy.upstream.state.chunk_delay_ms = 800
    with httpx.Client(base_url=proxy.url, timeout=10) as http, http.stream(
        "POST", "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "stream": True,
              "messages": [{"role": "user", "content": "slow"}]},
    ) as response:
        body = b"".join(response.iter_raw())
        interaction_id = response.headers["x-tuneloop-id"]
    assert b'"code":"upstream_timeout"' in body
    row = proxy.row(interaction_id)
    assert row["finish"] == "timeout"
