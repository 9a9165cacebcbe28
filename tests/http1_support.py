"""What the HTTP/1.1 client tests share: a runner on asyncio's loop and on uvloop, reply
builders, and upstream scripts for `tests.fakes.raw_http.RawUpstream`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from proxy.http1 import Http1Pool, Http1Reply
from proxy.reply import Timeouts
from tests.fakes.raw_http import RawUpstream, Seen, send

TIMEOUTS = Timeouts(2, 2)
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.SelectorEventLoop

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as loop:
            return loop.run(coro)

    return runner


def ok(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), b"".join(h + b"\r\n" for h in extra), body)


def chunked(*pieces: bytes, ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    for piece in pieces:
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
    return out + b"0%s\r\n%s\r\n" % (ext, trailers)


async def fetch(pool: Http1Pool, upstream: RawUpstream, body: bytes = b"{}",
                method: str = "POST", headers: dict[str, str] | None = None,
                ) -> tuple[Http1Reply, bytes]:
    reply = await pool.send(method, upstream.url + "/v1/x", headers or {}, body, TIMEOUTS)
    try:
        data = await reply.read()
    finally:
        reply.release()
    return reply, data


async def echo_then(seen: Seen, writer: asyncio.StreamWriter) -> None:
    await send(writer, ok(b"echo: " + seen.body))


def scripted(*replies: Callable[[Seen, asyncio.StreamWriter], Awaitable[bool | None]]
             ) -> Callable[[Seen, asyncio.StreamWriter], Awaitable[bool | None]]:
    """The n-th request gets the n-th scripted reply, later ones an echo."""
    done: list[Seen] = []

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool | None:
        done.append(seen)
        if len(done) <= len(replies):
            return await replies[len(done) - 1](seen, writer)
        await echo_then(seen, writer)
        return None
    return answer


def writes(*parts: bytes, close: bool = False, byte_by_byte: bool = False
           ) -> Callable[[Seen, asyncio.StreamWriter], Awaitable[bool | None]]:
    async def reply(seen: Seen, writer: asyncio.StreamWriter) -> bool | None:
        await send(writer, *parts, byte_by_byte=byte_by_byte)
        return False if close else None
    return reply
