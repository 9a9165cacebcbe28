"""The upstream clients for OpenAI-compatible servers.

The logged endpoints use the pooled HTTP/1.1 client of `proxy.http1` (the hot path); the other
`/v1/*` paths use one shared aiohttp session. Either way the body is relayed as the upstream
sent it, compressed or not; capture decodes its own copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import yarl

from proxy.http1 import Http1Pool
from proxy.reply import HeaderAccess, Timeouts, UpstreamCut, UpstreamReply
from tuneloop.errors import UpstreamTimeout, UpstreamUnreachable


class AiohttpReply(HeaderAccess):
    def __init__(self, response: aiohttp.ClientResponse, read_timeout_s: float):
        self._response = response
        self._read_timeout_s = read_timeout_s
        self.status = response.status
        self.headers = [(k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in response.raw_headers]

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(
                f"the upstream sent nothing for {self._read_timeout_s:g} s"
            ) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise UpstreamCut(str(exc) or type(exc).__name__) from exc

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    def release(self) -> None:
        self._response.release()
        if not self._response.closed:
            self._response.close()


class HttpUpstream:
    """Every OpenAI-compatible upstream: the logged endpoints go through the small pooled
    HTTP/1.1 client of `proxy.http1` (the hot path), everything else through one aiohttp
    session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._pool = Http1Pool()

    async def send_logged(self, method: str, url: str, headers: dict[str, str], body: bytes,
                          timeouts: Timeouts) -> UpstreamReply:
        return await self._pool.send(method, url, headers, body, timeouts)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # a proxy relays cookies, it doesn't keep a jar (and the jar costs per request)
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, method: str, url: str, headers: dict[str, str],
                   body: bytes | AsyncIterator[bytes] | None,
                   timeouts: Timeouts) -> AiohttpReply:
        if self._session is None:
            raise RuntimeError("HttpUpstream.start() was not awaited")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
        )
        try:
            response = await self._session.request(
                method, yarl.URL(url, encoded=True), headers=headers, data=body,
                timeout=timeout, allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"the upstream at {_origin(url)} did not answer in time") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise UpstreamUnreachable(
                f"could not reach the upstream at {_origin(url)}: {type(exc).__name__}"
            ) from exc
        except asyncio.CancelledError:
            raise
        return AiohttpReply(response, timeouts.read_s)


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
