"""A stand-in for one tuneloop replica behind the load balancer: answers /healthz, says who it
is, records what reached it, streams on request, and can die mid-request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STREAM_WAIT_S = 30.0


@dataclass
class ReplicaState:
    name: str
    drop_posts: bool = False
    """Read a POST whole, then close the connection without answering (a replica killed while
    it works on a completion)."""
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, X-Forwarded-For) of every request that reached this replica, checks
    excepted."""
    release_stream: threading.Event = field(default_factory=threading.Event)
    """Set by the test once the first streamed chunk came through; the second follows."""
    second_chunk_sent: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> int:
        with self.lock:
            return sum(1 for method, _, _ in self.seen if method == "POST")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ReplicaServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        state = self.server.state
        with state.lock:
            state.seen.append((self.command, self.path, self.headers.get("X-Forwarded-For")))

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, b'{"status":"ok"}')
            return
        self._record()
        self._answer(200, self.server.state.name.encode(), "text/plain")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._record()
        state = self.server.state
        if self.path == "/v1/stream":
            self._stream(state)
        elif state.drop_posts:
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self._answer(200, b'{"replica":"' + state.name.encode() + b'"}')

    def _stream(self, state: ReplicaState) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(b"data: one\n\n")
        state.release_stream.wait(STREAM_WAIT_S)
        state.second_chunk_sent.set()
        self._chunk(b"data: two\n\ndata: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class ReplicaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ReplicaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def replica(state: ReplicaState) -> Iterator[tuple[int, ReplicaServer]]:
    """Serve ``state`` on a free loopback port; yield the port and the server (``stop`` it to
    make connections to that port fail)."""
    server = ReplicaServer(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True,
                              name=f"replica-{state.name}")
    thread.start()
    try:
        yield int(server.server_address[1]), server
    finally:
        stop(server)
        thread.join(5)


def stop(server: ReplicaServer) -> None:
    """Stop accepting: the port refuses connections from now on."""
    if server.socket.fileno() != -1:
        server.shutdown()
        server.server_close()
