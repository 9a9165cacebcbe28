"""Per-request cost of the logged endpoints' upstream client: proxy.http1 beside aiohttp.

One loopback upstream in its own process (a bare asyncio server on uvloop answering every
request at once, so the client's own work is what differs) serves both clients on the same
uvloop event loop, in alternating rounds; the script prints the client process's CPU time and
the wall time per request, for a plain JSON answer (Content-Length) and a chunked stream of 20
SSE events, one request at a time and 32 at once, with the ratio aiohttp / ours. Bounded
(about 20 s on a quiet machine). Run from the repository root:

    python bench/http1_client.py
    python bench/http1_client.py --requests 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop
import yarl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.http1 import Http1Pool  # noqa: E402
from proxy.reply import Timeouts  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

REQUEST = (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":'
           b'"Summarise the refund policy for a customer in two sentences."}]}')
ANSWER = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
          b'"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",'
          b'"content":"Refunds are issued within 14 days. Keep your receipt."}}],'
          b'"usage":{"prompt_tokens":20,"completion_tokens":12,"total_tokens":32}}')
PLAIN = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_1\r\n"
         b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"word "}}]}\n\n'
STREAM = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
          b"transfer-encoding: chunked\r\n\r\n"
          + b"".join(b"%x\r\n%s\r\n" % (len(EVENT), EVENT) for _ in range(20))
          + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json",
           "accept": "application/json", "user-agent": "OpenAI/Python 1.0",
           "accept-encoding": "gzip, deflate"}


class Upstream(asyncio.Protocol):
    """Answers each request as soon as its body is in (one request per connection at a time)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            target = head.split(b" ", 2)[1]
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(STREAM if target.endswith(b"/stream") else PLAIN)


def serve(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


Send = Callable[[str], Awaitable[bytes]]


async def ours() -> tuple[Send, Callable[[], Awaitable[None]]]:
    pool = Http1Pool()
    timeouts = Timeouts(5, 30)

    async def send(url: str) -> bytes:
        reply = await pool.send("POST", url, HEADERS, REQUEST, timeouts)
        try:
            return await reply.read()
        finally:
            reply.release()

    async def close() -> None:
        pool.close()

    return send, close


async def theirs() -> tuple[Send, Callable[[], Awaitable[None]]]:
    """aiohttp as proxy.upstream.HttpUpstream configures it."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Content-Type"), timeout=aiohttp.ClientTimeout(total=None))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)

    async def send(url: str) -> bytes:
        response = await session.request("POST", yarl.URL(url, encoded=True), headers=HEADERS,
                                         data=REQUEST, timeout=timeout, allow_redirects=False)
        try:
            return await response.read()
        finally:
            response.release()

    return send, session.close


async def measure(send: Send, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per request."""
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await send(url)

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = per_worker * concurrency
    return ((time.process_time() - cpu) / done * 1e6, (time.perf_counter() - wall) / done * 1e6)


async def run(base: str, requests: int, rounds: int) -> None:
    clients = {"proxy.http1": await ours(), "aiohttp": await theirs()}
    for name, (send, _) in clients.items():  # both read the same bytes
        assert await send(base + "/plain") == ANSWER, name
        assert (await send(base + "/stream")).endswith(b"data: [DONE]\n\n"), name
    print(f"{'answer':<8}{'clients':>8}  {'proxy.http1 CPU/wall µs':>24}  "
          f"{'aiohttp CPU/wall µs':>20}  {'aiohttp / ours (CPU)':>20}")
    for path in ("/plain", "/stream"):
        for concurrency in (1, 32):
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
            for _ in range(rounds):
                for name, (send, _) in clients.items():
                    samples[name].append(
                        await measure(send, base + path, requests, concurrency))
            cpu = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
            wall = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
            print(f"{path[1:]:<8}{concurrency:>8}  "
                  f"{cpu['proxy.http1']:>12.0f} / {wall['proxy.http1']:>8.0f}  "
                  f"{cpu['aiohttp']:>9.0f} / {wall['aiohttp']:>8.0f}  "
                  f"{cpu['aiohttp'] / cpu['proxy.http1']:>19.2f}×")
    for _, close in clients.values():
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1200, help="per round and client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        uvloop.run(run(f"http://127.0.0.1:{port}/v1", args.requests, args.rounds))
    finally:
        upstream.terminate()
        upstream.wait(5)


if __name__ == "__main__":
    main()
