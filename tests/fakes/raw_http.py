"""A raw-socket HTTP/1.1 upstream on loopback whose every answer is scripted byte by byte.

Each connection serves its requests one after the other (as a real HTTP/1.1 server does); for
each request the test's `answer(seen, writer)` writes whatever bytes it wants, sleeps, closes.
`seen` records what arrived, and on which connection, so a test can tell whether the client
reused a connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int
    raw_head: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Answer = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool | None]]
"""Write the reply; return False to close the connection afterwards."""


@dataclass
class RawUpstream:
    answer: Answer
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for _ in range(3):  # let the handlers see their connections end
            await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self._writers.append(writer)
        keep = True
        try:
            while keep:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                seen = parse_request(head, number)
                length = int(seen.header("content-length") or 0)
                seen.body = await reader.readexactly(length) if length else b""
                self.seen.append(seen)
                keep = await self.answer(seen, writer) is not False
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def parse_request(head: bytes, connection: int) -> Seen:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
    return Seen(method, target, headers, b"", connection, head)


async def send(writer: asyncio.StreamWriter, *parts: bytes, byte_by_byte: bool = False) -> None:
    """Write parts (each its own write, or every byte on its own) and let them leave."""
    for part in parts:
        if byte_by_byte:
            for index in range(len(part)):
                writer.write(part[index:index + 1])
                await writer.drain()
                await asyncio.sleep(0)
        else:
            writer.write(part)
            await writer.drain()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a clean FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ThreadedRawUpstream:
    """The same upstream on its own event loop in a thread, for a proxy under test."""

    def __init__(self, answer: Answer):
        self.upstream = RawUpstream(answer)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.upstream.__aenter__(), self._loop).result(5)
        return self.upstream

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.upstream.__aexit__(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
