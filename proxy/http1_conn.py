"""One pooled HTTP/1.1 connection: where each response starts and ends, byte for byte.

httptools (llhttp, strict mode) parses; this module decides how many bytes each message may
take so that nothing of one response can be read as part of the next one:

- a response head ends at the first blank line (llhttp requires CRLF, so the first `\\r\\n\\r\\n`
  is the end of the head; checked against the parser's own `on_headers_complete`);
- interim 1xx responses (100, 103, ...) are skipped, their headers forgotten; 101 was never
  asked for and is a protocol error;
- a body is Content-Length bytes (exactly that many are fed to the parser), chunked (ends where
  the parser says; the last five bytes must be `x\\r\\n\\r\\n`, which no extra CR/LF after it can
  fake), or ends when the upstream closes cleanly; HEAD, 204 and 304 have none;
- any byte beyond the response, in the same read or later, or while idle in the pool, marks the
  connection dirty: it is closed, never reused.

Body bytes wait in a queue for the consumer; reading from the socket pauses at HIGH_WATER bytes
and resumes when the consumer has taken them, so a slow consumer never makes the client buffer
without bound.
"""

from __future__ import annotations

import asyncio
import collections
from typing import cast

import httptools

from proxy.reply import UpstreamCut

Origin = tuple[str, str, int]  # scheme, host, port
HIGH_WATER = 512 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_INTERIM = 32

HEAD, LENGTH, STREAM, DONE = 0, 1, 2, 3  # where the current response is


class ProtocolError(Exception):
    """The upstream broke HTTP/1.1 framing."""


class NotSent(ConnectionError):
    """The connection was gone before the request was written: nothing reached the upstream."""


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def wait(future: asyncio.Future[None], timeout_s: float) -> None:
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future)
    try:
        await future
    finally:
        timer.cancel()


class Connection(asyncio.Protocol):
    def __init__(self, origin: Origin):
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.dirty = False  # something nobody asked for arrived, or the reply broke: don't reuse
        self.in_flight = False
        self.idle_since = 0.0
        self.reused = False
        self.paused = False
        self.parser = httptools.HttpResponseParser(self)
        self.parser_clean = True  # llhttp itself ended the last message: it may parse the next
        self.reset(head_request=False)

    def reset(self, head_request: bool) -> None:
        if not self.parser_clean:
            self.parser = httptools.HttpResponseParser(self)
        self.parser_clean = False
        self.head_request = head_request
        self.phase = HEAD
        self.heads = 0
        self.head_end_expected = False
        self.head_bytes = 0
        self.carry = b""  # the last bytes of an unfinished head, to find a blank line split
        self.tail = b""  # the last five bytes of a chunked body
        self.interim = 0
        self.final = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.transfer_encoding: bytes | None = None
        self.chunked = False
        self.remaining = 0
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: BaseException | None = None
        self.headers_done: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.complete or not self.in_flight:
            self.unsolicited()
            return
        self.received_any = True
        try:
            self._consume(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade, ProtocolError) as exc:
            self.dirty = True
            if not self.complete:
                self._fail(UpstreamCut(f"unparseable response from the upstream: {_why(exc)}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("the upstream closed the connection")
        if self.in_flight and not self.complete:
            if exc is None and self.phase == STREAM and not self.chunked:
                self._finish()  # a body without length or chunks ends at a clean close
            else:
                self._fail(exc or ConnectionResetError(
                    "the upstream closed the connection before the response was complete"))
        self._wake()

    # -- feeding the parser exactly one response -------------------------------------------
    def _consume(self, data: bytes) -> None:
        feed = self.parser.feed_data
        pos, end = 0, len(data)
        while pos < end:
            phase = self.phase
            if phase == HEAD:
                stop = self._head_end(data, pos)
                self.head_bytes += (end if stop < 0 else stop) - pos
                if self.head_bytes > MAX_HEAD_BYTES:
                    raise ProtocolError(f"a response head longer than {MAX_HEAD_BYTES} bytes")
                if stop < 0:
                    feed(_piece(data, pos, end))
                    self.carry = (self.carry + data[max(pos, end - 3):])[-3:]
                    return
                heads = self.heads
                self.head_end_expected = True
                feed(_piece(data, pos, stop))
                self.head_end_expected = False
                if self.heads == heads:
                    raise ProtocolError("the response head did not end at its blank line")
                self.carry = b""
                self.head_bytes = 0
                pos = stop
            elif phase == LENGTH:
                take = min(self.remaining, end - pos)
                feed(_piece(data, pos, pos + take))
                pos += take
                self.remaining -= take
                if (self.remaining == 0) != self.complete:
                    raise ProtocolError("the body did not end at its Content-Length")
            elif phase == STREAM:
                feed(_piece(data, pos, end))
                if self.chunked:
                    self.tail = (self.tail + data[max(pos, end - 5):])[-5:]
                    if self.complete and not _clean_chunked_end(self.tail):
                        self.unsolicited()  # CR/LF after the last chunk: llhttp skips them
                return
            else:  # DONE: bytes beyond the response in the same read
                self.unsolicited()
                return

    def _head_end(self, data: bytes, pos: int) -> int:
        """The index just past the blank line that ends the head, or -1."""
        carry = self.carry
        if carry:
            joined = carry + data[pos:pos + 3]
            found = joined.find(b"\r\n\r\n")
            if found >= 0:
                return pos + found + 4 - len(carry)
        found = data.find(b"\r\n\r\n", pos)
        return found + 4 if found >= 0 else -1

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            raise ProtocolError("bytes after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.final:  # fields after a chunked body: trailers, never headers
            self.trailers.append((name, value))
            return
        self.raw_headers.append((name, value))
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            self.content_length = int(value)  # llhttp checked: digits, no duplicates
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.transfer_encoding = value

    def on_headers_complete(self) -> None:
        if not self.head_end_expected:
            raise ProtocolError("the parser ended a head where there is no blank line")
        self.heads += 1
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise ProtocolError("101 Switching Protocols, which was never asked for")
            self.interim += 1
            if self.interim > MAX_INTERIM:
                raise ProtocolError(f"more than {MAX_INTERIM} interim responses")
            self.raw_headers = []  # an interim response's fields are not the answer's
            self.content_length = self.transfer_encoding = None
            return
        self.final = True
        self.status = status
        # HTTP/1.0 keep-alive is an old extension: not worth the doubt, such connections close
        self.keep_alive = (self.parser.should_keep_alive()
                           and self.parser.get_http_version() == "1.1")
        if self.head_request or status == 204 or status == 304:
            self._finish()
        elif self.transfer_encoding is not None:
            self.chunked = self.transfer_encoding.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            self.phase = STREAM
            if not self.chunked:
                self.keep_alive = False
        elif self.content_length is not None:
            if self.content_length:
                self.phase = LENGTH
                self.remaining = self.content_length
            else:
                self._finish()
        else:
            self.phase = STREAM  # delimited by the upstream closing the connection
            self.keep_alive = False
        done = self.headers_done
        if done is not None and not done.done():
            done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        if not self.final:
            return  # the end of an interim response
        if self.phase == STREAM and not self.chunked:
            raise ProtocolError("the parser ended a body that only a close can end")
        self.parser_clean = not self.head_request
        self._finish()

    # -- state -----------------------------------------------------------------------------
    def _finish(self) -> None:
        self.complete = True
        self.phase = DONE
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        done = self.headers_done
        if done is not None and not done.done():
            done.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def unsolicited(self) -> None:
        self.dirty = True
        self.close()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
        self.paused = False

    def reusable(self) -> bool:
        return (self.complete and self.keep_alive and not self.dirty and self.lost is None
                and self.transport is not None and not self.transport.is_closing())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes, head_request: bool, read_timeout_s: float) -> None:
        """Write one request and wait until the final response's head has arrived."""
        if self.transport is None or self.lost is not None or self.transport.is_closing():
            raise NotSent("the connection was closed before the request was written")
        self.reset(head_request)
        self.in_flight = True
        self.headers_done = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            await wait(self.headers_done, read_timeout_s)
        except BaseException:
            self.close()
            raise


def _piece(data: bytes, start: int, stop: int) -> bytes | memoryview:
    """data[start:stop] for the parser: itself when whole, a copy when small (httptools reads
    bytes fastest), a view when large."""
    if start == 0 and stop == len(data):
        return data
    if stop - start < 65536:
        return data[start:stop]
    return memoryview(data)[start:stop]


def _clean_chunked_end(tail: bytes) -> bool:
    """A chunked body ends `x\\r\\n\\r\\n` with x neither CR nor LF (the last-chunk line or a
    trailer, then the blank line); CR/LF bytes after it always break that shape."""
    return len(tail) == 5 and tail.endswith(b"\r\n\r\n") and tail[0] not in b"\r\n"


def _why(exc: BaseException) -> str:
    inner = exc.__context__
    if isinstance(inner, ProtocolError):
        return str(inner)
    return str(exc) or type(exc).__name__
