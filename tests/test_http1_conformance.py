"""The pooled HTTP/1.1 client (`proxy.http1`) against a raw-socket upstream scripted byte by
byte: where each response starts and ends (1xx, close-delimited, chunked, HEAD/204/304, large
bodies, back-pressure) and what goes upstream. Reuse and resend rules: test_http1_reuse.py.

Each test runs on asyncio's loop and on uvloop (the proxy's). Whether a connection was reused
is read from the upstream's side: which connection each request arrived on.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable

import pytest

from proxy.http1 import Http1Pool
from proxy.reply import Timeouts, UpstreamCut
from tests.fakes.raw_http import RawUpstream, Seen, reset, send
from tests.http1_support import (
    TIMEOUTS,
    Run,
    chunked,
    echo_then,
    fetch,
    ok,
    run,
    scripted,
    writes,
)
from tuneloop.errors import BadRequest, UpstreamUnreachable

__all__ = ["run"]  # the fixture
BUFFER_BOUND = 768 * 1024  # proxy.http1_conn.HIGH_WATER (512 KiB) + one socket read (256 KiB)


# -- 1xx --------------------------------------------------------------------------------------
@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nlink: <a>\r\ncontent-length: 4\r\n\r\n",
])
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_interim_responses_are_skipped_and_never_taken_as_final(
        run: Run, interim: bytes, byte_by_byte: bool) -> None:
    async def scenario() -> None:
        upstream_answer = scripted(writes(interim, ok(b"final", b"x-final: 1"),
                                          byte_by_byte=byte_by_byte))
        async with RawUpstream(upstream_answer) as upstream:
            pool = Http1Pool()
            first, body = await fetch(pool, upstream, b"one")
            second, body2 = await fetch(pool, upstream, b"two")
            pool.close()
        assert (first.status, body) == (200, b"final")
        assert [k for k, _ in first.headers] == ["content-length", "x-final"]  # no link
        assert (second.status, body2) == (200, b"echo: two")
        assert [s.connection for s in upstream.seen] == [0, 0]
    run(scenario())


def test_the_red_team_cross_talk_app_b_never_reads_app_a_answer(run: Run) -> None:
    """Request A carries Expect: 100-continue; the upstream sends 100 Continue, then A's answer
    slowly. On main the client took the 100 as A's reply and pooled the connection: B read
    "echo: I am A"."""
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if b"I am A" in seen.body:
            await send(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.3)
        await send(writer, ok(b"echo: " + seen.body))

    async def scenario() -> None:
        async with RawUpstream(answer) as upstream:
            pool = Http1Pool()
            a, body_a = await fetch(pool, upstream, b"I am A",
                                    headers={"expect": "100-continue"})
            b, body_b = await fetch(pool, upstream, b"I am B")
            pool.close()
        assert (a.status, body_a) == (200, b"echo: I am A")
        assert (b.status, body_b) == (200, b"echo: I am B")
        assert all(s.header("expect") is None for s in upstream.seen)
    run(scenario())


def test_101_switching_protocols_is_an_error_and_the_connection_is_dropped(run: Run) -> None:
    async def scenario() -> None:
        upstream_answer = scripted(writes(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
            + ok(b"smuggled")))
        async with RawUpstream(upstream_answer) as upstream:
            pool = Http1Pool()
            with pytest.raises(UpstreamUnreachable, match="101"):
                await fetch(pool, upstream)
            _, body = await fetch(pool, upstream, b"next")
            pool.close()
        assert body == b"echo: next"
        assert [s.connection for s in upstream.seen] == [0, 1]
    run(scenario())


# -- what goes upstream -----------------------------------------------------------------------
@pytest.mark.parametrize("spell", [str.lower, str.title, str.upper])
def test_hop_by_hop_headers_never_go_upstream_whatever_the_caller_passes(
        run: Run, spell: Callable[[str], str]) -> None:
    given = {"Expect": "100-continue", "Connection": "keep-alive, X-Hop-Named",
             "X-Hop-Named": "secret", "Keep-Alive": "timeout=5", "TE": "trailers",
             "Trailer": "x-t", "Transfer-Encoding": "chunked", "Upgrade": "h2c",
             "Proxy-Authorization": "Basic eDp5", "Proxy-Connection": "keep-alive",
             "Host": "evil.example", "Content-Length": "999", "X-End-To-End": "kept"}

    async def scenario() -> None:
        async with RawUpstream(echo_then) as upstream:
            pool = Http1Pool()
            _, body = await fetch(pool, upstream, b"payload",
                                  headers={spell(k): v for k, v in given.items()})
            pool.close()
        seen = upstream.seen[0]
        names = sorted(name.lower() for name, _ in seen.headers)
        assert names == ["content-length", "host", "x-end-to-end"]
        assert seen.header("host") == upstream.url.removeprefix("http://")
        assert seen.header("content-length") == "7" and seen.body == b"payload"
        assert body == b"echo: payload"
    run(scenario())


def test_the_host_header_is_the_upstream_host_and_port_never_its_userinfo(run: Run) -> None:
    async def scenario() -> None:
        async with RawUpstream(echo_then) as upstream:
            pool = Http1Pool()
            address = upstream.url.removeprefix("http://")
            reply = await pool.send("POST", f"http://user:s3cret@{address}/v1/x", {}, b"{}",
                                    TIMEOUTS)
            await reply.read()
            reply.release()
            pool.close()
        assert upstream.seen[0].header("host") == address
        assert b"s3cret" not in upstream.seen[0].raw_head
    run(scenario())


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("POST", "/v1/x", {"x-a": "1\r\nx-injected: 1"}),
    ("POST", "/v1/x", {"x-a": "1\nx-injected: 1"}),
    ("POST", "/v1/x", {"x-a": "nul\x00"}),
    ("POST", "/v1/x", {"x-a\r\nx-injected": "1"}),
    ("POST", "/v1/x", {"bad name": "1"}),
    ("POST", "/v1/x", {"x-a": "snowman ☃"}),
    ("POST", "/v1/x HTTP/1.1\r\nx-injected: 1\r\n\r\nGET /", {}),
    ("POST", "/v1/x y", {}),
    ("GET /admin HTTP/1.1\r\n\r\nPOST", "/v1/x", {}),
])
def test_request_line_and_header_injection_is_refused_before_a_byte_is_sent(
        run: Run, method: str, path: str, headers: dict[str, str]) -> None:
    async def scenario() -> None:
        async with RawUpstream(echo_then) as upstream:
            pool = Http1Pool()
            with pytest.raises(BadRequest):
                await pool.send(method, upstream.url + path, headers, b"{}", TIMEOUTS)
            pool.close()
            await asyncio.sleep(0.05)
        assert upstream.seen == [] and upstream.connections == 0
    run(scenario())


# -- bodies -----------------------------------------------------------------------------------
@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"])
def test_a_body_delimited_by_the_close_completes_and_the_connection_is_not_reused(
        run: Run, status_line: bytes) -> None:
    async def scenario() -> None:
        upstream_answer = scripted(writes(status_line + b"\r\ncontent-type: text/plain\r\n\r\n",
                                          b"until ", b"the ", b"close", close=True))
        async with RawUpstream(upstream_answer) as upstream:
            pool = Http1Pool()
            reply, body = await fetch(pool, upstream)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert (reply.status, body) == (200, b"until the close")
        assert body2 == b"echo: next"
        assert [s.connection for s in upstream.seen] == [0, 1]
    run(scenario())


def test_a_reset_is_not_a_clean_end_of_a_close_delimited_body(run: Run) -> None:
    async def cut(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await send(writer, b"HTTP/1.1 200 OK\r\n\r\npartial")
        await asyncio.sleep(0.05)
        reset(writer)
        return False

    async def scenario() -> None:
        async with RawUpstream(scripted(cut)) as upstream:
            pool = Http1Pool()
            with pytest.raises(UpstreamCut):
                await fetch(pool, upstream)
            pool.close()
    run(scenario())


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_chunked_bodies_with_extensions_and_trailers(run: Run, byte_by_byte: bool) -> None:
    reply_bytes = chunked(b"hello ", b"chunked ", b"world", ext=b';name=value;q="a b";flag',
                          trailers=b"x-trailer: after\r\nx-checksum: abc\r\n")

    async def scenario() -> None:
        async with RawUpstream(scripted(writes(reply_bytes, byte_by_byte=byte_by_byte))
                               ) as upstream:
            pool = Http1Pool()
            reply, body = await fetch(pool, upstream)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert body == b"hello chunked world"
        assert reply.headers == [("transfer-encoding", "chunked")]  # trailers are not headers
        assert reply.trailers == [("x-trailer", "after"), ("x-checksum", "abc")]
        assert body2 == b"echo: next"
        assert [s.connection for s in upstream.seen] == [0, 0]
    run(scenario())


@pytest.mark.parametrize(("method", "head"), [
    ("HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: text/plain\r\n\r\n"),
    ("HEAD", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
    ("POST", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("POST", b"HTTP/1.1 204 No Content\r\ncontent-length: 11\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 11\r\netag: \"x\"\r\n\r\n"),
])
def test_head_204_and_304_have_no_body_and_the_next_answer_is_intact(
        run: Run, method: str, head: bytes) -> None:
    async def scenario() -> None:
        async with RawUpstream(scripted(writes(head))) as upstream:
            pool = Http1Pool()
            reply, body = await fetch(pool, upstream, method=method)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert body == b"" and reply.status in (200, 204, 304)
        assert body2 == b"echo: next"
        assert [s.connection for s in upstream.seen] == [0, 0]
    run(scenario())


# -- size and back-pressure --------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_response_larger_than_the_read_buffer(run: Run, framing: str) -> None:
    rng = random.Random(7)
    body = rng.randbytes(3 * 1024 * 1024 + 17)
    if framing == "length":
        reply_bytes = ok(body)
    else:
        pieces, at = [], 0
        while at < len(body):
            size = rng.randint(1, 300_000)
            pieces.append(body[at:at + size])
            at += size
        reply_bytes = chunked(*pieces)

    async def scenario() -> None:
        async with RawUpstream(scripted(writes(reply_bytes))) as upstream:
            pool = Http1Pool()
            _, got = await fetch(pool, upstream)
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert got == body and body2 == b"echo: next"
        assert [s.connection for s in upstream.seen] == [0, 0]
    run(scenario())


def test_a_slow_consumer_pauses_reading_and_the_buffer_stays_bounded(run: Run) -> None:
    size = 48 * 1024 * 1024
    block = hashlib.sha256(b"x").digest() * 2048  # 64 KiB
    progress = {"sent": 0}

    async def flood(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
            progress["sent"] += len(block)

    async def scenario() -> None:
        async with RawUpstream(scripted(flood)) as upstream:
            pool = Http1Pool()
            reply = await pool.send("POST", upstream.url + "/v1/x", {}, b"{}", Timeouts(2, 10))
            last = -1
            while progress["sent"] != last:  # wait until the upstream can send no more
                last = progress["sent"]
                await asyncio.sleep(0.2)
            waiting = sum(len(chunk) for chunk in reply._conn.chunks)
            assert progress["sent"] < size, "the upstream was never held back"
            assert waiting <= BUFFER_BOUND
            digest, total = hashlib.sha256(), 0
            async for chunk in reply.chunks():
                digest.update(chunk)
                total += len(chunk)
            reply.release()
            _, body2 = await fetch(pool, upstream, b"next")
            pool.close()
        assert total == size
        assert digest.digest() == hashlib.sha256(block * (size // len(block))).digest()
        assert body2 == b"echo: next"
    run(scenario())
