"""A small keep-alive HTTP/1.1 client for the logged endpoints' upstream calls.

Measured beside aiohttp in the same harness (bench notes in the README): about 0.2 ms less CPU
per request, which is most of what a proxy spends here. It does only what the hot path needs:
one request with a known body, a response read as it arrives (httptools parses it; chunked or
not), pooled connections per origin, connect and read timeouts, and TLS through asyncio. Other
paths (file uploads, HEAD, redirects) keep using aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from proxy.reply import HeaderAccess, Timeouts, UpstreamCut
from tuneloop.errors import UpstreamTimeout, UpstreamUnreachable

Origin = tuple[str, str, int]  # scheme, host, port
IDLE_LIMIT_S = 4.0  # below uvicorn's 5 s keep-alive: don't reuse what the server may close
PAUSE_AT_CHUNKS = 64


class _Connection(asyncio.Protocol):
    def __init__(self, origin: Origin):
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost: BaseException | None = None
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.headers_done: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamCut(f"unparseable response from the upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self._fail(exc or ConnectionResetError("the upstream closed the connection"))
        self.lost = self.lost or exc or ConnectionResetError("closed")
        self._wake()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        if len(self.chunks) >= PAUSE_AT_CHUNKS and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- helpers ---------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def usable(self) -> bool:
        return (self.lost is None and self.transport is not None
                and not self.transport.is_closing()
                and time.monotonic() - self.idle_since < IDLE_LIMIT_S)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait(self, timeout_s: float, future: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            await future
        finally:
            timer.cancel()

    async def send(self, raw: bytes, read_timeout_s: float) -> None:
        assert self.transport is not None
        self._reset()
        loop = asyncio.get_running_loop()
        self.headers_done = loop.create_future()
        self.transport.write(raw)
        try:
            await self.wait(read_timeout_s, self.headers_done)
        except TimeoutError:
            self.close()
            raise


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Http1Reply(HeaderAccess):
    def __init__(self, pool: Http1Pool, conn: _Connection, read_timeout_s: float):
        self._pool = pool
        self._conn = conn
        self._read_timeout_s = read_timeout_s
        self.status = conn.status
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in conn.raw_headers]
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        loop = asyncio.get_running_loop()
        while True:
            while conn.chunks:
                yield conn.chunks.popleft()
            if conn.paused and conn.transport is not None:
                conn.transport.resume_reading()
                conn.paused = False
            if conn.complete:
                return
            if conn.lost is not None:
                raise UpstreamCut(str(conn.lost) or type(conn.lost).__name__)
            conn.waiter = loop.create_future()
            try:
                await conn.wait(self._read_timeout_s, conn.waiter)
            except TimeoutError as exc:
                conn.close()
                raise UpstreamTimeout(
                    f"the upstream sent nothing for {self._read_timeout_s:g} s") from exc
            finally:
                conn.waiter = None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.keep_alive and conn.lost is None:
            self._pool.put_back(conn)
        else:
            conn.close()


class Http1Pool:
    def __init__(self, max_idle_per_origin: int = 512):
        self._idle: dict[Origin, list[_Connection]] = collections.defaultdict(list)
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[Origin, str, str]] = {}

    def _split(self, url: str) -> tuple[Origin, str, str]:
        """(origin, Host header, request target) of a URL, cached by its base."""
        cached = self._targets.get(url)
        if cached is not None:
            return cached
        parts = urlsplit(url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname or "", port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if len(self._targets) < 4096:
            self._targets[url] = (origin, parts.netloc, target)
        return origin, parts.netloc, target

    def put_back(self, conn: _Connection) -> None:
        idle = self._idle[conn.origin]
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.reused = True
        idle.append(conn)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle[origin]
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout_s: float) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: Any = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(origin), host, port, ssl=tls,
                                       server_hostname=host if tls else None),
                timeout=timeout_s)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to the upstream at {scheme}://{host}:{port} "
                                  f"took longer than {timeout_s:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnreachable(f"could not reach the upstream at {scheme}://{host}:{port}:"
                                      f" {type(exc).__name__}") from exc
        return conn

    async def send(self, method: str, url: str, headers: dict[str, str], body: bytes,
                   timeouts: Timeouts) -> Http1Reply:
        origin, netloc, target = self._split(url)
        lines = [f"{method} {target} HTTP/1.1", f"host: {netloc}",
                 f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()
                  if name not in ("host", "content-length", "transfer-encoding")]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        conn = self._take(origin)
        if conn is not None:
            try:
                await conn.send(raw, timeouts.read_s)
                return Http1Reply(self, conn, timeouts.read_s)
            except TimeoutError as exc:
                raise UpstreamTimeout("the upstream did not answer in time") from exc
            except Exception as exc:
                conn.close()
                if conn.received_any:
                    raise UpstreamUnreachable(
                        "the upstream closed the connection mid-answer") from exc
                # an idle connection the server had closed: one retry on a fresh connection
        conn = await self._connect(origin, timeouts.connect_s)
        try:
            await conn.send(raw, timeouts.read_s)
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer in time") from exc
        except Exception as exc:
            conn.close()
            raise UpstreamUnreachable(f"the upstream closed the connection: {exc}") from exc
        return Http1Reply(self, conn, timeouts.read_s)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
