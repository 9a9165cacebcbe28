"""How `tuneloop serve` runs the app under uvicorn: its options, and a header read timeout.

uvicorn (0.54) bounds nothing before a request's headers are complete: a client that sends
`POST /v1/chat/completions HTTP/1.1\\r\\n` and then one byte every few seconds keeps a
connection and a parser forever, and its keep-alive timer only runs between requests. The
protocol below (uvicorn's httptools protocol plus one timer) gives each request
`header_timeout_s` from its first byte to the end of its headers; then it answers an
OpenAI-shaped 408 with `connection: close` and closes. A connection that sends nothing at all
within that time is closed without an answer, and so are bytes between requests that begin
none (empty lines, which the parser skips: they stopped the keep-alive timer and nothing else
ran). Body read timeouts live in `proxy.body`.

Neither idle timer (this one, uvicorn's keep-alive) closes a connection whose next request is
already in the socket: a loop late under load runs due timers before it reads (uvloop reads
only after them when its wait was interrupted), and closing a socket with unread bytes resets
it, so the client lost a request it had sent in time (issue 12). The timer looks first and
waits once more. The keep-alive (`keep_alive_timeout_s`, 75 s) is longer than common
clients' pool expiry (httpx and the openai SDK 5 s, aiohttp 15 s, nginx and AWS load
balancers 60 s): the client gives up on an idle connection before the server does, never at
the same moment.

`server_header=False`: the `server` header a client sees is the upstream's (relayed), never
two; `date` is uvicorn's (the upstream's is dropped in `proxy.headers`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import resource
import select
from typing import Any

import orjson
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tuneloop.config import Settings
from tuneloop.errors import Overloaded, RequestTimeout

FD_RESERVE = 64
"""File descriptors kept for the database, the spool, logs and the admin API."""


async def overloaded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """uvicorn's answer beyond `limit_concurrency`, OpenAI-shaped (503, then close)."""
    body = orjson.dumps(Overloaded(
        "the proxy is at its connection limit (max_connections); retry shortly").to_openai())
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _in_headers = False
    _between = True  # no request begun since the last one ended (or the connection began)
    _waited = False  # the header timer found bytes unread once and waited for them

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (self._between and self._header_timer is None and not self.transport.is_closing()
                and (self.cycle is None or self.cycle.response_complete)):
            self._arm()  # bytes that began no request: bounded as a request's headers are

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._between = False
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._between = True

    def timeout_keep_alive_handler(self) -> None:
        if self._unread():  # the next request came in time: data_received stops this timer
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)
            return
        super().timeout_keep_alive_handler()

    def _unread(self) -> bool:
        """Whether the socket holds bytes (or an end) the loop has not read yet."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _start_asgi_task(self, cycle: RequestResponseCycle,
                         app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, overloaded if app is service_unavailable else app)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        self._waited = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still on its way: a pipelined request waits its turn
        if not self._in_headers:
            if not self._waited and self._unread():  # sent in time, not read yet: once more
                self._waited = True
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)
                return
            self.transport.close()  # nothing was sent: nobody to answer
            return
        error = RequestTimeout(
            f"the request headers did not arrive within {self.header_timeout_s:g} s")
        body = orjson.dumps(error.to_openai())
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        head += [name + b": " + value + b"\r\n"
                 for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(body)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def protocol_class(settings: Settings) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                {"header_timeout_s": settings.header_timeout_s})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Everything `uvicorn.run` needs besides the app."""
    return {
        "host": settings.host, "port": settings.port, "loop": "uvloop", "access_log": False,
        "log_level": settings.log_level, "timeout_graceful_shutdown": 30, "lifespan": "on",
        "proxy_headers": False, "limit_concurrency": connection_limit(settings),
        **connection_options(settings),
    }


def connection_options(settings: Settings) -> dict[str, Any]:
    """How each client connection is served (the tests' in-process servers use these too)."""
    return {"http": protocol_class(settings), "timeout_keep_alive": settings.keep_alive_timeout_s,
            "server_header": False}


def connection_limit(settings: Settings) -> int:
    """uvicorn's `limit_concurrency` for `max_connections`, but never more than the open-file
    limit allows: each client connection may hold one upstream connection too, and some
    descriptors are kept back."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    allowed = settings.max_connections
    if soft != resource.RLIM_INFINITY:
        allowed = max(1, min(allowed, (soft - FD_RESERVE) // 2))
    return allowed + 1  # uvicorn refuses when the count, this connection included, reaches it


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def open_relay_warning(settings: Settings) -> str | None:
    """What `serve` says loudly when anyone who can reach it can spend the server's key: a
    non-loopback address, OPENAI_API_KEY set, and no proxy keys issued to apps (keyless
    requests to the default upstream go out with the server's key, by design)."""
    if _loopback(settings.host) or settings.openai_api_key is None or settings.issue_keys:
        return None
    return (f"WARNING: listening on {settings.host} with OPENAI_API_KEY set and issue_keys off: "
            "anyone who can reach this address can call the upstream with the server's key. "
            "Issue keys to apps (TUNELOOP_ISSUE_KEYS=true, `tuneloop keys create`), unset "
            "OPENAI_API_KEY so that apps send their own, or bind 127.0.0.1.")
