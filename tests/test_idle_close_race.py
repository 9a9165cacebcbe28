"""Issue 12 (r12x3 LOW 4): under load a few requests had their connection closed without an
answer. The server closed a connection when its idle timer fired (uvicorn's keep-alive timer
between requests; the header timer on a new connection that had sent nothing yet) even when
the client's next request had already arrived and only waited, unread, for an event loop that
was late (uvloop runs due timers before it reads what came in meanwhile). Closing a socket
with unread bytes resets it: the client loses its request. And uvicorn's 5 s keep-alive was
the same as httpx's (the openai SDK's) pool expiry, so a client reused a connection just as
the server gave up on it.

The process is stopped (SIGSTOP) while the requests arrive and until its timers are due, then
resumed: a loop late by that much, as under load, deterministically."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from proxy.server import uvicorn_options
from tests.conftest import proxy_settings
from tests.security.raw import (
    RawResponse,
    closed_by_peer,
    connect,
    json_answer,
    read_response,
    recorder,
    served,
)

HEALTH = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
STALL_S = 6.0
"""Longer than both timers below and than uvicorn's own 5 s keep-alive (main's)."""


def answer_or_reset(sock: socket.socket) -> RawResponse | str:
    try:
        return read_response(sock) or "closed without an answer"
    except ConnectionResetError:
        return "connection reset"


def test_requests_that_arrived_while_the_loop_was_late_are_answered(tmp_path: Path) -> None:
    with recorder(json_answer()) as upstream, served(
        tmp_path, upstream.url + "/v1", keep_alive_timeout_s="1", header_timeout_s="1"
    ) as process:
        kept = connect(process.url, timeout_s=15)
        kept.sendall(HEALTH)
        first = read_response(kept)
        assert first is not None and first.status == 200
        fresh = connect(process.url, timeout_s=15)  # accepted, nothing sent yet
        time.sleep(0.2)  # the server has taken the new connection and armed its timer
        with process.stalled():
            kept.sendall(HEALTH)  # the next request on a kept-alive connection
            fresh.sendall(HEALTH)  # a new connection's first request
            time.sleep(STALL_S)
        for name, sock in (("kept-alive", kept), ("new", fresh)):
            answer = answer_or_reset(sock)
            assert isinstance(answer, RawResponse) and answer.status == 200, (name, answer)
            sock.close()


def test_bytes_that_begin_no_request_do_not_keep_a_connection_open(tmp_path: Path) -> None:
    """Bytes between requests that start none (llhttp skips empty lines) stopped the
    keep-alive timer, and no header timer ran: the connection stayed open forever."""
    with recorder(json_answer()) as upstream, served(
        tmp_path, upstream.url + "/v1", keep_alive_timeout_s="1", header_timeout_s="1"
    ) as process, connect(process.url, timeout_s=15) as sock:
        sock.sendall(HEALTH)
        answer = read_response(sock)
        assert answer is not None and answer.status == 200
        sock.sendall(b"\r\n")
        assert closed_by_peer(sock)


def test_the_keep_alive_outlasts_common_clients_pools(tmp_path: Path) -> None:
    """httpx (so the openai SDK) drops a pooled connection idle 5 s, aiohttp 15 s, nginx's
    upstream pool and AWS load balancers 60 s: the server must wait longer than they do, or
    a client may send on a connection at the moment the server closes it."""
    settings = proxy_settings(tmp_path, "http://127.0.0.1:9/v1")
    assert settings.keep_alive_timeout_s > 60
    assert settings.keep_alive_timeout_s > httpx.Limits().keepalive_expiry  # type: ignore[operator]
    assert uvicorn_options(settings)["timeout_keep_alive"] == settings.keep_alive_timeout_s
