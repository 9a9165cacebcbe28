"""Limits before forwarding: JSON depth, and how long a client may take to send its headers and
its body. Each is met with an OpenAI-shaped answer (400, 408) before anything goes upstream."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.security.raw import (
    closed_by_peer,
    connect,
    exchange,
    json_answer,
    openai_error,
    read_response,
    recorder,
    served,
    trickle,
)

ANSWER = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant",
                                                            "content": "ok"},
                                    "finish_reason": "stop"}]})


def nested(depth: int) -> bytes:
    """JSON text `depth` levels deep (orjson won't write beyond 254), alternating objects and
    arrays, innermost a string with brackets in it."""
    opening = b"".join(b'{"k":' if level % 2 else b"[" for level in range(depth))
    closing = b"".join(b"}" if level % 2 else b"]" for level in reversed(range(depth)))
    return opening + b'"[[{{ not structure }}]]"' + closing


def chat(metadata_depth: int) -> bytes:
    # the body object is one level and metadata's own object another
    return (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
            b'"metadata":{"deep":' + nested(metadata_depth - 2) + b"}}")


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n".encode() + extra + b"\r\n" + body)


@pytest.mark.parametrize("depth", [65, 300, 2000])
def test_json_deeper_than_64_is_refused_before_forwarding(
    proxy_factory: Callable[..., ProxyServer], depth: int,
) -> None:
    with recorder(json_answer(ANSWER)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        response = exchange(proxy.url, post("/v1/chat/completions", chat(depth)))
        assert response is not None and response.status == 400
        assert openai_error(response)["code"] == "json_too_deep"
        assert upstream.requests == []
        # a passthrough JSON body too
        response = exchange(proxy.url, post("/v1/fine_tuning/jobs", nested(depth)))
        assert response is not None and response.status == 400
        assert upstream.requests == []
        # 64 levels is what OpenAI's API may need at most: forwarded, logged, listed
        ok = exchange(proxy.url, post("/v1/chat/completions", chat(64)))
        assert ok is not None and ok.status == 200
        assert len(upstream.requests) == 1
        proxy.wait_logged(1)
        assert len(proxy.admin().interactions()["items"]) == 1


@pytest.mark.parametrize("content_type", [
    b"APPLICATION/JSON", b"application/JSON; charset=utf-8", b"", b"text/plain",
    b"application/x-www-form-urlencoded", b"application/octet-stream",
])
def test_a_deep_passthrough_body_is_refused_whatever_its_content_type(
    proxy_factory: Callable[..., ProxyServer], content_type: bytes,
) -> None:
    with recorder(json_answer(ANSWER)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
        for body in (nested(200), b" \r\n" + nested(200), b'{"a":' + nested(200) + b"}"):
            request = post("/v1/fine_tuning/jobs", body).replace(
                b"content-type: application/json\r\n",
                b"content-type: " + content_type + b"\r\n" if content_type else b"")
            response = exchange(proxy.url, request)
            assert response is not None and response.status == 400, (content_type, body[:9])
            assert openai_error(response)["code"] == "json_too_deep"
        assert upstream.requests == []
        # multipart uploads (the files API) are not JSON: relayed as they are
        multipart = (b"--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
                     b"\r\n" + nested(200) + b"\r\n--b--\r\n")
        response = exchange(proxy.url, post("/v1/files", multipart).replace(
            b"content-type: application/json", b"content-type: Multipart/Form-Data; boundary=b"))
        assert response is not None and response.status == 200
        assert len(upstream.requests) == 1


def test_the_admin_api_and_feedback_refuse_json_deeper_than_64(proxy: ProxyServer) -> None:
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
    with proxy.http() as http:
        for method, path in (("PUT", "/admin/routes"), ("POST", "/v1/feedback")):
            response = http.request(method, path, headers=admin,
                                    content=b'{"a":' + nested(300) + b"}")
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "json_too_deep"


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder(json_answer(ANSWER)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", body_idle_timeout_s=1.0)
        body = chat(3)
        for path in ("/v1/chat/completions", "/v1/files"):
            with connect(proxy.url, timeout_s=15) as sock:
                sock.sendall(post(path, body)[:-10])  # all but the last 10 bytes
                response = read_response(sock)
                assert response is not None and response.status == 408
                assert openai_error(response)["code"] == "request_timeout"
                assert closed_by_peer(sock)
        assert upstream.requests == []


@pytest.mark.parametrize(("path", "limit"), [
    ("/v1/chat/completions", "body_timeout_s"),
    ("/v1/files", "passthrough_body_timeout_s"),
])
def test_a_body_trickled_byte_by_byte_is_cut_off_by_the_total_limit(
    proxy_factory: Callable[..., ProxyServer], path: str, limit: str,
) -> None:
    with recorder(json_answer(ANSWER)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", body_idle_timeout_s=2.0,
                              **{limit: 2.0})
        request = post(path, chat(3))
        with connect(proxy.url, timeout_s=15) as sock:
            head, _, body = request.partition(b"\r\n\r\n")
            sock.sendall(head + b"\r\n\r\n")
            # ~0.3 s a byte: never a 2 s pause, never the end
            response = trickle(sock, (bytes([byte]) for byte in body[:-1]))
            assert response is not None and response.status == 408
            assert "2 s in all" in str(openai_error(response)["message"])  # the total limit
            assert upstream.requests == []


def test_headers_that_never_end_get_408_and_a_silent_connection_is_closed(
    tmp_path: Path,
) -> None:
    with recorder(json_answer(ANSWER)) as upstream, served(
        tmp_path, upstream.url + "/v1", header_timeout_s="1"
    ) as process:
        with connect(process.url, timeout_s=15) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            # a header line every 0.3 s, never the blank line
            response = trickle(sock, (f"x-slow-{n}: a\r\n".encode() for n in range(100)))
            assert response is not None and response.status == 408
            assert openai_error(response)["code"] == "request_timeout"
            assert closed_by_peer(sock)
        with connect(process.url, timeout_s=15) as silent:
            assert closed_by_peer(silent)
        # a connection kept alive between requests may still send its next one
        with connect(process.url, timeout_s=15) as sock:
            for _ in range(2):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                answer = read_response(sock)
                assert answer is not None and answer.status == 200
                time.sleep(0.5)
        assert upstream.requests == []


def test_beyond_max_connections_a_request_gets_an_openai_shaped_503(tmp_path: Path) -> None:
    health = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    with recorder(json_answer(ANSWER)) as upstream, served(
        tmp_path, upstream.url + "/v1", max_connections="2"
    ) as process:
        held = [connect(process.url), connect(process.url)]
        for sock in held:  # both accepted and kept alive
            sock.sendall(health)
            response = read_response(sock)
            assert response is not None and response.status == 200
        refused = exchange(process.url, health)
        assert refused is not None and refused.status == 503
        assert openai_error(refused)["code"] == "overloaded"
        assert refused.header_values("connection") == ["close"]
        held.pop().close()
        for _ in range(50):  # once the server has seen the close, there is room again
            again = exchange(process.url, health)
            assert again is not None
            if again.status == 200:
                break
            time.sleep(0.1)
        assert again.status == 200
        held.pop().close()


class Receiving:
    """An upstream that counts the bytes it receives and answers once it has `expected`."""

    def __init__(self, expected: int):
        self.expected = expected
        self.received = 0
        self.first_half = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(15)
            data = b""
            while True:
                piece = conn.recv(1 << 20)
                if not piece:
                    return
                data += piece
                if len(data.partition(b"\r\n\r\n")[2]) >= self.expected // 2:
                    self.first_half.set()
                if b"\r\n\r\n" in data and len(data.partition(b"\r\n\r\n")[2]) >= self.expected:
                    break
            self.received = len(data.partition(b"\r\n\r\n")[2])
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 2\r\nconnection: close\r\n\r\n{}")


@pytest.mark.parametrize("content_type", [b"multipart/form-data; boundary=b",
                                          b"application/octet-stream"])
def test_an_upload_is_relayed_as_it_arrives_not_held_whole(
    proxy_factory: Callable[..., ProxyServer], content_type: bytes,
) -> None:
    half = b"--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
    half += b"x" * (4 * 1024 * 1024 - len(half))
    body = half + b"y" * (len(half) - 8) + b"\r\n--b--\r\n"
    upstream = Receiving(len(body))
    proxy = proxy_factory(upstream=upstream.url + "/v1", openai_api_key=UPSTREAM_KEY)
    request = (b"POST /v1/files HTTP/1.1\r\nhost: x\r\ncontent-type: " + content_type
               + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")
    with connect(proxy.url, timeout_s=20) as sock:
        sock.sendall(request + half)
        # the first half reaches the upstream before the client sends the second
        assert upstream.first_half.wait(10), "the proxy held the body instead of relaying it"
        sock.sendall(body[len(half):])
        response = read_response(sock)
    assert response is not None and response.status == 200
    assert upstream.received == len(body)
    upstream.sock.close()


def test_a_passthrough_json_body_is_held_within_the_logged_size_limit(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    with recorder(json_answer(ANSWER)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", max_body_bytes=4096)
        big = b'{"input":"' + b"x" * 8000 + b'"}'
        with connect(proxy.url) as sock:  # sent in pieces, no content-length
            sock.sendall(b"POST /v1/moderations HTTP/1.1\r\nhost: x\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for start in range(0, len(big), 1000):
                piece = big[start:start + 1000]
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            response = read_response(sock)
        assert response is not None and response.status == 413
        assert upstream.requests == []


class Silent:
    """An upstream that reads whatever comes and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(30)
            try:
                while conn.recv(1 << 20):
                    pass
            except OSError:
                pass


def test_a_relayed_upload_over_the_size_limit_gets_413(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    upstream = Silent()
    proxy = proxy_factory(upstream=upstream.url + "/v1", max_passthrough_bytes=65536)
    with connect(proxy.url, timeout_s=20) as sock:  # chunked: no length to refuse up front
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nhost: x\r\ncontent-type: "
                     b"multipart/form-data; boundary=b\r\ntransfer-encoding: chunked\r\n\r\n")
        piece = b"z" * 8192
        response = None
        try:
            for _ in range(16):
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        except OSError:
            pass
        response = read_response(sock)
    assert response is not None and response.status == 413, response
    assert openai_error(response)["code"] == "request_too_large"
    upstream.sock.close()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/files"])
def test_a_body_that_never_starts_gets_408(
    proxy_factory: Callable[..., ProxyServer], path: str,
) -> None:
    with recorder(json_answer(ANSWER)) as upstream:
        proxy = proxy_factory(upstream=upstream.url + "/v1", body_idle_timeout_s=1.0)
        with connect(proxy.url, timeout_s=15) as sock:
            sock.sendall(post(path, chat(3)).partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
            response = read_response(sock)
            assert response is not None and response.status == 408
            assert closed_by_peer(sock)
        assert upstream.requests == []
