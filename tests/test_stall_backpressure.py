"""A client that stops reading a large stream does not make the target look stalled (r14c #2).

The proxy marked the upstream `heard` when it read a chunk, then waited on sending it to the
client: a client that stops reading (a small receive window) blocked that send, the time counted
as upstream silence, and its hang-up after `upstream_stall_s` was logged as the drawn arm's
stall error (`route.stalled_s`), on either arm of a canary and in the history baseline. Only the
time waiting on the upstream is silence now."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlparse

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_canary_failures import ALIAS, SINCE, STABLE

BIG = "lorem ipsum dolor sit amet " * 400_000  # far more than the sockets' buffers hold


def read_first_bytes_then_stop(base_url: str, wait_s: float) -> bytes:
    """Stream a chat answer on a socket with a 4 KB receive buffer, read its first bytes, read
    nothing more for `wait_s`, then hang up."""
    url = urlparse(base_url)
    body = json.dumps({"model": ALIAS, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST {url.path.rstrip('/')}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {UPSTREAM_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert url.hostname is not None and url.port is not None
        sock.connect((url.hostname, url.port))
        sock.sendall(head + body)
        first = sock.recv(2048)
        time.sleep(wait_s)
    return first


def test_a_client_that_stops_reading_is_no_stall_of_the_target(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(upstream_stall_s=1.0)
    proxy.upstream.state.model_replies[STABLE] = BIG
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    assert read_first_bytes_then_stop(proxy.base_url, 2.5).startswith(b"HTTP/1.1 200")
    proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                   lambda r: r[0][0] >= 1)
    assert proxy.sql("SELECT finish, route ->> 'stalled_s' FROM interactions") == [
        ["client_disconnected", None]]
    for history in (False, True):
        (row,) = admin.route_health(ALIAS, since=SINCE, history_baseline=history)["targets"]
        assert (row["requests"], row["errors"]) == (0, 0), row  # a user's cancel: unjudged
