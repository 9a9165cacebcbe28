"""The load balancer of the replicas profile (deploy/haproxy.cfg), run for real: Debian's
haproxy on loopback in front of two small replica stand-ins (tests/fakes/replica.py), with only
the addresses changed. It must spread requests over both, relay a stream chunk by chunk, retry
on the other replica only what never reached one, and answer its own errors as OpenAI does."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.replica import ReplicaServer, ReplicaState, replica, stop
from tests.fakes.server import free_port
from tuneloop.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "haproxy.cfg"
START_TIMEOUT = 20.0
IO_TIMEOUT = 20.0


def _haproxy() -> str:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                         if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        if os.environ.get("TUNELOOP_REQUIRE_HAPROXY"):  # set by .ci/run: CI must run these
            pytest.fail("haproxy is missing, and .ci/run requires the load balancer tests")
        pytest.skip("Debian's haproxy is not installed (.ci/run installs it)")
    return binary


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in {CONFIG.name}"
    return text.replace(old, new)


def _loopback_config(lb_port: int, ports: tuple[int, int], stats: Path) -> str:
    """The shipped file with loopback addresses, plus a stats socket to read its counters."""
    text = CONFIG.read_text()
    text = _replace_once(text, "bind :4000", f"bind 127.0.0.1:{lb_port}")
    text = _replace_once(text, "proxy-1:4000", f"127.0.0.1:{ports[0]}")
    text = _replace_once(text, "proxy-2:4000", f"127.0.0.1:{ports[1]}")
    return _replace_once(text, "\nglobal\n", f"\nglobal\n    stats socket {stats} mode 600\n")


@dataclass
class Balancer:
    port: int
    stats: Path
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stat(self) -> dict[str, dict[str, str]]:
        """`show stat` of the replicas backend, by server name (and BACKEND)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(IO_TIMEOUT)
            sock.connect(str(self.stats))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().strip().splitlines()
        names = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(names, line.split(","), strict=False)) for line in lines[1:]]
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}

    def wait_both_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                rows = self.stat()
                if all(rows[name]["status"] == "UP" for name in ("proxy-1", "proxy-2")):
                    return
            except (OSError, KeyError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("haproxy did not see both replicas up:\n"
                                     + self.log.read_text())
            time.sleep(0.05)


@contextmanager
def balancer(tmp_path: Path, ports: tuple[int, int]) -> Iterator[Balancer]:
    binary = _haproxy()
    lb = Balancer(free_port(), tmp_path / "haproxy.sock", tmp_path / "haproxy.log")
    config = tmp_path / "haproxy.cfg"
    config.write_text(_loopback_config(lb.port, ports, lb.stats))
    with lb.log.open("wb") as log:
        process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        lb.wait_both_up()
        yield lb
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def two_replicas(a: ReplicaState, b: ReplicaState,
                 ) -> Iterator[tuple[int, int, list[ReplicaServer]]]:
    with ExitStack() as stack:
        port_a, server_a = stack.enter_context(replica(a))
        port_b, server_b = stack.enter_context(replica(b))
        yield port_a, port_b, [server_a, server_b]


def _error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error.keys() >= {"message", "type", "code"}
    return str(error["code"])


def test_the_shipped_config_is_valid_before_the_replicas_resolve() -> None:
    binary = _haproxy()
    result = subprocess.run([binary, "-c", "-f", str(CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_body_limit_is_tuneloops_own() -> None:
    limit = Settings.model_fields["max_passthrough_bytes"].default
    assert f"req.hdr_val(content-length) gt {limit} " in CONFIG.read_text()


def test_spreads_requests_sets_forwarded_for_and_streams_chunk_by_chunk(tmp_path: Path) -> None:
    a, b = ReplicaState("a"), ReplicaState("b")
    with two_replicas(a, b) as (port_a, port_b, _), balancer(tmp_path, (port_a, port_b)) as lb:
        answers = [lb.request("GET", "/who", headers={"X-Forwarded-For": "203.0.113.9"})
                   for _ in range(6)]
        assert {status for status, _ in answers} == {200}
        assert {body for _, body in answers} == {b"a", b"b"}
        # the address HAProxy saw, never what the client claimed
        assert {xff for state in (a, b) for _, _, xff in state.seen} == {"127.0.0.1"}

        with socket.create_connection(("127.0.0.1", lb.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(b"POST /v1/stream HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\n"
                         b"Content-Type: application/json\r\n\r\n{}")
            received = b""
            while b"data: one" not in received:
                chunk = sock.recv(65536)
                assert chunk, "the stream ended before its first chunk"
                received += chunk
            # the first chunk arrived while the replica still holds back the second
            assert not (a.second_chunk_sent.is_set() or b.second_chunk_sent.is_set())
            a.release_stream.set()
            b.release_stream.set()
            while not received.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                assert chunk, "the stream was cut"
                received += chunk
        assert b"text/event-stream" in received and b"data: [DONE]" in received

        too_large = Settings.model_fields["max_passthrough_bytes"].default + 1
        seen_before = len(a.seen) + len(b.seen)
        status, body = lb.request("POST", "/v1/files",
                                  headers={"Content-Length": str(too_large)})
        assert status == 413 and _error_code(body) == "request_too_large"
        assert len(a.seen) + len(b.seen) == seen_before


def test_a_replica_that_refuses_connections_is_skipped_without_losing_a_request(
        tmp_path: Path) -> None:
    a, b = ReplicaState("a"), ReplicaState("b")
    with two_replicas(a, b) as (port_a, port_b, servers), \
            balancer(tmp_path, (port_a, port_b)) as lb:
        stop(servers[1])  # b's port refuses from now on; the health check needs 3 failures
        answers = [lb.request("POST" if i % 2 else "GET",
                              "/v1/chat/completions" if i % 2 else "/who",
                              body=b"{}" if i % 2 else None) for i in range(8)]
        assert [status for status, _ in answers] == [200] * 8
        assert all(body in (b"a", b'{"replica":"a"}') for _, body in answers)
        assert a.posts() == 4 and b.posts() == 0
        # they reached a on a retry, redispatched from b, not by luck of the balancing
        assert int(lb.stat()["BACKEND"]["wredis"]) >= 1

        stop(servers[0])
        status, body = lb.request("POST", "/v1/chat/completions", body=b"{}")
        assert status == 503 and _error_code(body) == "no_replica"
        assert a.posts() == 4


def test_a_request_that_reached_a_replica_is_never_sent_to_another(tmp_path: Path) -> None:
    a, b = ReplicaState("a"), ReplicaState("b", drop_posts=True)
    with two_replicas(a, b) as (port_a, port_b, _), balancer(tmp_path, (port_a, port_b)) as lb:
        answers = [lb.request("POST", "/v1/chat/completions", body=b'{"model":"m"}')
                   for _ in range(24)]
        statuses = [status for status, _ in answers]
        assert set(statuses) == {200, 502} and b.posts() >= 1
        # each completion ran once: b's were answered 502, none was replayed on a
        assert statuses.count(502) == b.posts()
        assert statuses.count(200) == a.posts()
        assert {_error_code(body) for status, body in answers if status == 502} == {
            "replica_error"}
