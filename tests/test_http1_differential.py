"""Differential: the same scripted upstream replies, read by our pooled client and by h11.

Hypothesis writes whole replies (optional interim 1xx responses, a status, headers, a body
framed by Content-Length, by chunks of random sizes with extensions and trailers, or by the
close), sends them over a real loopback socket cut at random places, and checks that our
client reports the status, headers, body and trailers h11 parses from the same bytes, and that
it reuses the connection exactly when h11 says the connection may carry another request. One
pool serves every example in turn, so any byte of one reply read as part of the next shows up
as a mismatch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.http1 import Http1Pool
from proxy.reply import Timeouts
from tests.fakes.raw_http import RawUpstream, Seen

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~", min_size=1, max_size=12)
VALUE = st.builds(
    lambda inner: inner.strip(" \t"),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
            max_size=30))
RESERVED = {"content-length", "transfer-encoding", "connection", "keep-alive", "trailer", "te",
            "upgrade"}
FIELDS = st.lists(st.tuples(NAME, VALUE).filter(lambda f: f[0] not in RESERVED), max_size=6)
EXTENSION = st.one_of(
    st.just(b""),
    st.builds(lambda n, v: b";" + n.encode() + b"=" + v.encode(), NAME, NAME),
    st.builds(lambda n: b";" + n.encode(), NAME),
    st.builds(lambda n, v: b';' + n.encode() + b'="' + v.encode() + b'"', NAME,
              st.text("abc xyz,;=", max_size=8)),
)


@dataclass
class Reply:
    wire: bytes
    cuts: list[int]
    closes: bool  # the upstream closes after it (close-delimited body)


def _head(version: bytes, status: int, reason: bytes, fields: list[tuple[bytes, bytes]]
          ) -> bytes:
    lines = [b"HTTP/%s %d %s" % (version, status, reason)]
    lines += [name + b": " + value for name, value in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _latin(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    interim = b"".join(
        _head(b"1.1", draw(st.sampled_from([100, 102, 103])), b"Interim",
              _latin(draw(FIELDS)))
        for _ in range(draw(st.integers(0, 2))))
    status = draw(st.sampled_from([200, 201, 204, 206, 304, 400, 404, 429, 500, 503]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    fields = _latin(draw(FIELDS))
    connection = draw(st.sampled_from([None, b"close", b"keep-alive"]))
    if connection is not None:
        fields.append((b"Connection", connection))
    body = draw(st.binary(max_size=3000))
    if status in (204, 304):
        framing = "none"
        body = b""
    elif version == b"1.0":
        framing = draw(st.sampled_from(["length", "close"]))
    else:
        framing = draw(st.sampled_from(["length", "chunked", "close"]))
    payload = b""
    if framing == "length":
        fields.append((b"Content-Length", b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        at = 0
        while at < len(body):
            size = draw(st.integers(1, max(1, len(body) - at)))
            payload += b"%x%s\r\n%s\r\n" % (size, draw(EXTENSION), body[at:at + size])
            at += size
        trailers = _latin(draw(FIELDS))
        payload += b"0%s\r\n%s\r\n" % (
            draw(EXTENSION), b"".join(n + b": " + v + b"\r\n" for n, v in trailers))
    wire = interim + _head(version, status, b"Reason phrase", fields) + payload
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=4)))
    return Reply(wire, cuts, closes=framing == "close")


def h11_reading(reply: Reply) -> tuple[int, list[tuple[str, str]], bytes, list[tuple[str, str]],
                                       bool]:
    """(status, headers, body, trailers, may carry another request) as h11 reads the bytes."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/v1/x",
                          headers=[("host", "upstream"), ("content-length", "2")]))
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    conn.receive_data(reply.wire)
    if reply.closes:
        conn.receive_data(b"")
    status, headers, body = 0, [], b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            trailers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
            # a body delimited by the close leaves no connection to reuse, whatever h11's state
            reusable = (conn.our_state is h11.DONE and conn.their_state is h11.DONE
                        and not reply.closes)
            return status, headers, body, trailers, reusable
        elif not isinstance(event, h11.InformationalResponse):
            raise AssertionError(f"h11 did not read a whole reply: {event!r}")


class Bench:
    """One event loop, one scripted upstream and one pool for all examples."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.current: Reply | None = None
        self.upstream = RawUpstream(self._answer)
        self.runner.run(self.upstream.__aenter__())
        self.pool = Http1Pool()

    async def _answer(self, seen: Seen, writer: asyncio.StreamWriter) -> bool:
        reply = self.current
        assert reply is not None
        edges = [0, *reply.cuts, len(reply.wire)]
        for start, stop in itertools.pairwise(edges):
            writer.write(reply.wire[start:stop])
            await writer.drain()
            await asyncio.sleep(0)
        return not reply.closes

    async def exchange(self, reply: Reply) -> tuple[int, list[tuple[str, str]], bytes,
                                                    list[tuple[str, str]]]:
        self.current = reply
        sent = await self.pool.send("POST", self.upstream.url + "/v1/x", {}, b"{}",
                                    Timeouts(2, 2))
        try:
            body = await sent.read()
        finally:
            sent.release()
        trailers = getattr(sent, "trailers", [])  # (main's client had none: compare the rest)
        return sent.status, [(n.lower(), v) for n, v in sent.headers], body, trailers

    def close(self) -> None:
        self.pool.close()
        self.runner.run(self.upstream.__aexit__())
        self.runner.close()


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    bench = Bench()
    yield bench
    bench.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=replies(), second=replies())
def test_our_client_reads_every_reply_as_h11_does(bench: Bench, first: Reply, second: Reply
                                                   ) -> None:
    expected_first = h11_reading(first)
    expected_second = h11_reading(second)
    before = len(bench.upstream.seen)
    got_first = bench.runner.run(bench.exchange(first))
    got_second = bench.runner.run(bench.exchange(second))
    assert got_first == expected_first[:4]
    assert got_second == expected_second[:4]
    first_conn, second_conn = (s.connection for s in bench.upstream.seen[before:before + 2])
    assert (first_conn == second_conn) == expected_first[4], "reuse differs from h11's verdict"
