"""A small keep-alive HTTP/1.1 client for the logged endpoints' upstream calls.

Measured beside aiohttp in the same harness (`python bench/http1_client.py`; notes in the
README): less CPU per request, which is most of what a proxy spends here. It does only what the
hot path needs: one request with a known body, a response read as it arrives, pooled
connections per origin, connect and read timeouts, TLS through asyncio. How each response is
framed, so that no byte of one answer can be read as the next one's, is `proxy.http1_conn`.

What this module guarantees about the request:
- only end-to-end headers go upstream: Host and Content-Length are set here; Connection,
  Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Expect, Proxy-* and whatever the
  caller's Connection header names are dropped, whatever the caller passes;
- header names are tokens and values carry no CR, LF, NUL or other control characters, the
  method is a token and the target visible ASCII: anything else is refused (400) before a byte
  is written;
- a request is resent (once, on a fresh connection) only when a reused connection failed with
  nothing of the reply received and either nothing was written or the request may be repeated
  (an idempotent method, or an Idempotency-Key header): a POST the upstream may have begun
  is never sent twice.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from proxy.http1_conn import Connection, NotSent, Origin, wait
from proxy.reply import HeaderAccess, Timeouts, UpstreamCut
from tuneloop.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable

IDLE_LIMIT_S = 4.0  # below uvicorn's 5 s keep-alive: don't reuse what the server may close
CACHE_LIMIT = 4096
HOP_BY_HOP = frozenset({"host", "content-length", "connection", "keep-alive", "te", "trailer",
                        "transfer-encoding", "upgrade", "expect"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # CR and LF are counted
_TARGET = re.compile(r"[\x21-\x7e]+")


class Http1Reply(HeaderAccess):
    def __init__(self, pool: Http1Pool, conn: Connection, read_timeout_s: float):
        self._pool = pool
        self._conn = conn
        self._read_timeout_s = read_timeout_s
        self.status = conn.status
        self.headers = [(k.decode("latin-1"), v.decode("latin-1").rstrip(" \t"))
                        for k, v in conn.raw_headers]
        self.trailers: list[tuple[str, str]] = []
        """Fields after a chunked body, set once the whole body has been read."""
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        loop = asyncio.get_running_loop()
        while True:
            queue = conn.chunks
            if queue:  # everything that has arrived, in one piece (as aiohttp's iter_any)
                chunk = queue.popleft() if len(queue) == 1 else b"".join(queue)
                queue.clear()
                conn.buffered = 0
                if conn.paused:
                    conn.resume()
                yield chunk
                continue
            if conn.complete:
                if conn.trailers:
                    self.trailers = [(k.decode("latin-1"), v.decode("latin-1").rstrip(" \t"))
                                     for k, v in conn.trailers]
                return
            if conn.error is not None:
                raise UpstreamCut(str(conn.error) or type(conn.error).__name__)
            conn.resume()
            conn.waiter = loop.create_future()
            try:
                await wait(conn.waiter, self._read_timeout_s)
            except TimeoutError as exc:
                conn.close()
                raise UpstreamTimeout(
                    f"the upstream sent nothing for {self._read_timeout_s:g} s") from exc
            finally:
                conn.waiter = None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        """Give the connection back: to the pool only if its response was read completely and
        cleanly and nothing beyond it arrived; closed otherwise."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.reusable():
            self._pool.put_back(conn)
        else:
            conn.close()


class Http1Pool:
    def __init__(self, max_idle_per_origin: int = 512):
        self._idle: dict[Origin, list[Connection]] = collections.defaultdict(list)
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[Origin, str, str]] = {}
        self._names: dict[str, str] = {}  # header name as given -> lower case, "" = dropped

    def _split(self, url: str) -> tuple[Origin, str, str]:
        """(origin, Host header, request target) of a URL, checked, cached by URL."""
        cached = self._targets.get(url)
        if cached is not None:
            return cached
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamUnreachable(f"not an http(s) upstream URL: {url[:200]!r}",
                                      code="bad_upstream_url")
        host = parts.netloc.rpartition("@")[2]  # user:password@ never goes in Host
        if not _TARGET.fullmatch(host):
            raise UpstreamUnreachable("the upstream URL's host is not valid",
                                      code="bad_upstream_url")
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not _TARGET.fullmatch(target):
            raise BadRequest("the request path has characters that cannot go upstream "
                             "(spaces, controls or non-ASCII must be percent-encoded)",
                             code="invalid_path")
        if len(self._targets) < CACHE_LIMIT:
            self._targets[url] = (origin, host, target)
        return origin, host, target

    def _name(self, name: str) -> str:
        known = self._names.get(name)
        if known is not None:
            return known
        if not _TOKEN.fullmatch(name):
            raise BadRequest(f"invalid header name {name[:64]!r}", code="invalid_header")
        lower = name.lower()
        kept = "" if lower in HOP_BY_HOP or lower.startswith("proxy-") else lower
        if len(self._names) < CACHE_LIMIT:
            self._names[name] = kept
        return kept

    def request_bytes(self, method: str, netloc: str, target: str,
                      headers: Mapping[str, str], body: bytes) -> bytes:
        """The request as it goes on the wire; hop-by-hop headers dropped, the rest checked."""
        if not _TOKEN.fullmatch(method):
            raise BadRequest(f"invalid method {method[:32]!r}", code="invalid_method")
        names = self._names
        parts = [f"{method} {target} HTTP/1.1\r\nhost: {netloc}\r\n"
                 f"content-length: {len(body)}\r\n"]
        nominated = ""
        for name, value in headers.items():
            lower = names.get(name)
            if lower is None:
                lower = self._name(name)
            if lower:
                parts.append(f"{name}: {value}\r\n")
            elif name.lower() == "connection":
                nominated = value
        if nominated:  # the fields a Connection header names are hop-by-hop too
            dropped = {token.strip().lower() for token in nominated.split(",")}
            parts[1:] = [f"{name}: {value}\r\n" for name, value in headers.items()
                         if self._name(name) and name.lower() not in dropped]
        parts.append("\r\n")
        text = "".join(parts)
        lines = len(parts) + 2  # every CR and LF in the head is a line end we wrote
        if text.count("\n") != lines or text.count("\r") != lines or _CONTROL.search(text):
            raise BadRequest("a header value holds a control character (CR, LF, NUL, ...)",
                             code="invalid_header")
        try:
            head = text.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise BadRequest("a header holds characters outside Latin-1",
                             code="invalid_header") from exc
        return head + body if body else head

    def put_back(self, conn: Connection) -> None:
        idle = self._idle[conn.origin]
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.in_flight = False
        conn.resume()  # read while idle: a close or a stray byte must be seen
        conn.idle_since = time.monotonic()
        conn.reused = True
        idle.append(conn)

    def _take(self, origin: Origin) -> Connection | None:
        idle = self._idle[origin]
        while idle:
            conn = idle.pop()
            if (conn.lost is None and not conn.dirty
                    and time.monotonic() - conn.idle_since < IDLE_LIMIT_S):
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout_s: float) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: Any = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(origin), host, port, ssl=tls,
                                       server_hostname=host if tls else None),
                timeout=timeout_s)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to the upstream at {scheme}://{host}:{port} "
                                  f"took longer than {timeout_s:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnreachable(f"could not reach the upstream at {scheme}://{host}:{port}:"
                                      f" {type(exc).__name__}") from exc
        return conn

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                   timeouts: Timeouts) -> Http1Reply:
        origin, netloc, target = self._split(url)
        raw = self.request_bytes(method, netloc, target, headers, body)
        head_request = method == "HEAD"
        conn = self._take(origin)
        if conn is not None:
            try:
                await conn.request(raw, head_request, timeouts.read_s)
                return Http1Reply(self, conn, timeouts.read_s)
            except asyncio.CancelledError:  # the client left: this connection is not reused
                conn.close()
                raise
            except TimeoutError as exc:
                raise UpstreamTimeout("the upstream did not answer in time") from exc
            except Exception as exc:
                conn.close()
                if isinstance(exc, NotSent):
                    pass  # nothing was written: send it on a fresh connection
                elif conn.received_any:
                    raise UpstreamUnreachable(
                        f"the upstream broke a reused connection mid-answer: {_reason(exc)}"
                    ) from exc
                elif not _repeatable(method, headers):
                    raise UpstreamUnreachable(
                        f"the upstream closed a reused connection without answering "
                        f"({_reason(exc)}); a {method} without an Idempotency-Key is not "
                        f"sent twice, the upstream may have begun it") from exc
                # nothing was answered and it may be repeated: once, on a fresh connection
        conn = await self._connect(origin, timeouts.connect_s)
        try:
            await conn.request(raw, head_request, timeouts.read_s)
        except asyncio.CancelledError:
            conn.close()
            raise
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer in time") from exc
        except Exception as exc:
            raise UpstreamUnreachable(f"the upstream failed the request: {_reason(exc)}") from exc
        return Http1Reply(self, conn, timeouts.read_s)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _repeatable(method: str, headers: Mapping[str, str]) -> bool:
    return method in IDEMPOTENT or any(
        name.lower() in ("idempotency-key", "x-idempotency-key") for name in headers)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
