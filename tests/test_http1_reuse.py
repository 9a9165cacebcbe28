"""When the pooled HTTP/1.1 client (`proxy.http1`) reuses a connection and when it resends a
request, against a raw-socket upstream scripted byte by byte: a connection goes back to the
pool only after a complete, clean response with nothing beyond it; a request is resent only
when nothing of the reply came and it may be repeated.
"""

from __future__ import annotations

import asyncio

import pytest

from proxy.http1 import Http1Pool
from tests.fakes.raw_http import RawUpstream, Seen, send
from tests.http1_support import Run, chunked, echo_then, fetch, ok, run, scripted, writes
from tuneloop.errors import UpstreamUnreachable

__all__ = ["run"]  # the fixture


def test_connection_close_from_the_server_is_never_reused(run: Run) -> None:
    """The upstream says close but keeps the socket open: the client must not reuse it."""
    async def scenario() -> None:
        upstream_answer = scripted(writes(ok(b"bye", b"connection: close")))
        async with RawUpstream(upstream_answer) as upstream:
            pool = Http1Pool()
            _, body = await fetch(pool, upstream)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert (body, body2) == (b"bye", b"echo: next")
        assert [s.connection for s in upstream.seen] == [0, 1]
    run(scenario())


# -- a kept-alive connection the server closed --------------------------------------------------
def test_an_idle_connection_the_server_closed_is_replaced_without_an_error(run: Run) -> None:
    async def scenario() -> None:
        async with RawUpstream(scripted(writes(ok(b"first"), close=True))) as upstream:
            pool = Http1Pool()
            await fetch(pool, upstream)
            await asyncio.sleep(0.05)  # the FIN reaches the idle connection
            _, body = await fetch(pool, upstream, b"second")
            pool.close()
        assert body == b"echo: second"
        assert [s.connection for s in upstream.seen] == [0, 1]
    run(scenario())


async def _read_then_close(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    return False  # the request was read (and maybe acted on); no answer


@pytest.mark.parametrize(("method", "headers", "resent"), [
    ("POST", {}, False),
    ("POST", {"Idempotency-Key": "k-1"}, True),
    ("GET", {}, True),
    ("PUT", {}, True),
])
def test_a_reused_connection_closed_without_an_answer_resends_only_what_may_be_repeated(
        run: Run, method: str, headers: dict[str, str], resent: bool) -> None:
    async def scenario() -> None:
        async with RawUpstream(scripted(echo_then, _read_then_close)) as upstream:
            pool = Http1Pool()
            await fetch(pool, upstream, b"first")
            if resent:
                _, body = await fetch(pool, upstream, b"again", method, headers)
                assert body == b"echo: again"
            else:
                with pytest.raises(UpstreamUnreachable, match="not sent twice"):
                    await fetch(pool, upstream, b"again", method, headers)
            pool.close()
        bodies = [s.body for s in upstream.seen]
        assert bodies == [b"first", b"again", b"again"] if resent else [b"first", b"again"]
    run(scenario())


def test_a_reused_connection_cut_mid_answer_is_never_resent(run: Run) -> None:
    async def scenario() -> None:
        half = writes(b"HTTP/1.1 200 OK\r\ncontent-le", close=True)
        async with RawUpstream(scripted(echo_then, half)) as upstream:
            pool = Http1Pool()
            await fetch(pool, upstream, b"first")
            with pytest.raises(UpstreamUnreachable, match="mid-answer"):
                await fetch(pool, upstream, b"again", "GET")
            pool.close()
        assert [s.body for s in upstream.seen] == [b"first", b"again"]
    run(scenario())


# -- nothing beyond the response ---------------------------------------------------------------
@pytest.mark.parametrize("reply_bytes", [
    ok(b"hello") + b"\r\n",
    ok(b"hello") + b"X",
    ok(b"hello") + b"EXTRA BYTES",
    ok(b"hello") + ok(b"unasked"),
    chunked(b"hello") + b"\r\n",
    chunked(b"hello") + b"\n",
    chunked(b"hello", trailers=b"x-t: 1\r\n") + b"\r\n\r\n",
    chunked(b"hello") + ok(b"unasked"),
    b"HTTP/1.1 204 No Content\r\n\r\n" + b"\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"hello") + b"\r\n",
])
def test_any_byte_beyond_the_response_means_the_connection_is_not_reused(
        run: Run, reply_bytes: bytes) -> None:
    async def scenario() -> None:
        async with RawUpstream(scripted(writes(reply_bytes))) as upstream:
            pool = Http1Pool()
            _, body = await fetch(pool, upstream)
            await asyncio.sleep(0.05)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert body in (b"hello", b"")
        assert body2 == b"echo: next"
        assert [s.connection for s in upstream.seen] == [0, 1]
    run(scenario())


def test_a_response_the_server_sends_while_the_connection_is_idle_is_not_taken(
        run: Run) -> None:
    async def answer_then_more(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await send(writer, ok(b"asked"))
        await asyncio.sleep(0.05)
        await send(writer, ok(b"unasked"))

    async def scenario() -> None:
        async with RawUpstream(scripted(answer_then_more)) as upstream:
            pool = Http1Pool()
            _, body = await fetch(pool, upstream)
            await asyncio.sleep(0.2)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert (body, body2) == (b"asked", b"echo: next")
        assert [s.connection for s in upstream.seen] == [0, 1]
    run(scenario())
