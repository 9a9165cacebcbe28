"""Attacker's tools: a recording listener on loopback (the would-be SSRF target, or a scripted
upstream) and raw-socket HTTP/1.1 exchanges with the proxy."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tests.conftest import ADMIN_TOKEN
from tests.proc import ProxyProcess

Answer = Callable[[bytes], list[tuple[float, bytes]]]
"""Given the raw request, what to send back: (delay in seconds, bytes) pieces."""


def json_answer(body: bytes = b'{"object":"list","data":[]}',
                headers: bytes = b"") -> Answer:
    def answer(request: bytes) -> list[tuple[float, bytes]]:
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + headers
                + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        return [(0.0, head + body)]
    return answer


@dataclass
class Recorder:
    """Accepts connections on 127.0.0.1, records every request it reads, answers each."""

    answer: Answer = field(default_factory=json_answer)
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _sock: socket.socket | None = None
    _stop: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Recorder:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop = True
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        buffer = b""
        with conn:
            while not self._stop:
                try:
                    request, buffer = _read_request(conn, buffer)
                except (OSError, ConnectionError):
                    return
                if request is None:
                    return
                self.requests.append(request)
                try:
                    for delay, data in self.answer(request):
                        if delay:
                            time.sleep(delay)
                        conn.sendall(data)
                except OSError:
                    return


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None, b""
        rest += data
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


@contextmanager
def recorder(answer: Answer | None = None) -> Iterator[Recorder]:
    rec = Recorder(answer or json_answer()).start()
    try:
        yield rec
    finally:
        rec.stop()


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]

    def json(self) -> object:
        return orjson.loads(self.body)


def connect(url: str, timeout_s: float = 10.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def read_response(sock: socket.socket) -> RawResponse | None:
    """One response (content-length or chunked); None if the connection closed first."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    names = {k.lower(): v for k, v in headers}
    if "content-length" in names:
        length = int(names["content-length"])
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        return RawResponse(status, headers, rest[:length])
    if names.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                data = sock.recv(65536)
                if not data:
                    return RawResponse(status, headers, body + rest)
                rest += data
            if size == 0:
                return RawResponse(status, headers, body)
            body, rest = body + rest[:size], rest[size + 2:]
    while True:  # close-delimited
        data = sock.recv(65536)
        if not data:
            return RawResponse(status, headers, rest)
        rest += data


def exchange(url: str, request: bytes, timeout_s: float = 10.0) -> RawResponse | None:
    with connect(url, timeout_s) as sock:
        sock.sendall(request)
        return read_response(sock)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer has closed the connection (reads EOF, or a reset)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def openai_error(response: RawResponse) -> dict[str, object]:
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert {"message", "type", "code"} <= set(error), error
    return error


@contextmanager
def served(tmp_path: Path, upstream: str, **env: str) -> Iterator[ProxyProcess]:
    """`tuneloop serve` as the operator runs it (its uvicorn options included), with
    `TUNELOOP_*` settings from `env`."""
    variables = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_INGEST_INTERVAL_MS": "20",
                 **{f"TUNELOOP_{k.upper()}": v for k, v in env.items()}}
    with ProxyProcess(tmp_path / "served.duckdb", upstream, env=variables) as process:
        yield process


def trickle(sock: socket.socket, pieces: Iterable[bytes], every_s: float = 0.3
            ) -> RawResponse | None:
    """Send `pieces` one every `every_s` (each wait is a read of the answer), as a slowloris
    client does; the answer as soon as the proxy gives one, or after the last piece."""
    sock.settimeout(every_s)
    response = None
    for piece in pieces:
        try:
            sock.sendall(piece)
            response = read_response(sock)
            break
        except TimeoutError:
            continue
        except OSError:
            break
    sock.settimeout(15)
    return response or read_response(sock)
