"""Two `tuneloop serve` replicas on one Postgres issuing their own keys. The server process
behind the LISTEN connection of the replica that does not lead is stopped (SIGSTOP: the
connection hangs without an error, as after a partition, a failover or with a stuck backend),
then a key is revoked through the other replica. The stalled replica refuses the key within
the periodic reload's period and a margin (it used to accept it for as long as the connection
hung: about 15 min, TCP's limit; issue 12), and makes its LISTEN connection again within
twice `TUNELOOP_SHARED_TIMEOUT_S` and a margin. Both times are printed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.replicas import TOKEN, ReplicaSet
from storage.backend.pg_database import LEADER_LOCK

pytestmark = pytest.mark.reliability

RELOAD_S = 2.0
MARGIN_S = 10.0  # a loaded machine's delays; far below the hang's ~15 min
TIMEOUT_S = 5.0  # TUNELOOP_SHARED_TIMEOUT_S's default


def status(url: str, key: str) -> int:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": "still mine?"}]}
                      ).status_code


def socket_owner(client_port: int, pids: list[int]) -> int:
    """Which of `pids` holds the loopback TCP socket whose local port is client_port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == client_port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    raise LookupError(f"no process of {pids} holds port {client_port}")


def feed_backends(pg_url: str) -> list[int]:
    with psycopg.connect(pg_url, autocommit=True) as con:
        return [pid for pid, in con.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'tuneloop-feed' "
            "AND datname = current_database()")]


def follower_feed(pg_url: str, group: ReplicaSet) -> tuple[int, int]:
    """(the index of the replica that does not lead, its feed's server process)."""
    with psycopg.connect(pg_url, autocommit=True) as con:
        rows = con.execute(
            "SELECT a.pid, a.client_port, EXISTS (SELECT 1 FROM pg_locks l WHERE "
            "l.pid = a.pid AND l.locktype = 'advisory' AND l.granted AND "
            "(l.classid::bigint << 32 | l.objid::bigint) = %s) "
            "FROM pg_stat_activity a WHERE a.application_name = 'tuneloop-feed' "
            "AND a.datname = current_database()", [LEADER_LOCK]).fetchall()
    assert len(rows) == 2 and sum(leads for _, _, leads in rows) == 1, rows
    backend, port = next((pid, port) for pid, port, leads in rows if not leads)
    procs = [r.proc.pid for r in group.replicas if r.proc is not None]
    return procs.index(socket_owner(port, procs)), backend


def test_a_replica_whose_listen_connection_hangs_still_refuses_a_revoked_key(
        pg_url: str, tmp_path: Path) -> None:
    env = {"TUNELOOP_ISSUE_KEYS": "true", "TUNELOOP_SHARED_RELOAD_S": str(RELOAD_S)}
    with ReplicaSet(pg_url, tmp_path, 2, env=env) as group:
        urls = [r.url for r in group.replicas]
        admin = {"authorization": f"Bearer {TOKEN}"}
        made = httpx.post(urls[0] + "/admin/keys", headers=admin, json={"name": "app"},
                          timeout=30).json()
        deadline = time.monotonic() + 30
        while any(status(url, made["key"]) != 200 for url in urls):
            assert time.monotonic() < deadline, "the new key never worked on both"
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while True:  # both feeds connected, one of them leading
            try:
                stalled, backend = follower_feed(pg_url, group)
                break
            except AssertionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        other = 1 - stalled

        os.kill(backend, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            time.sleep(RELOAD_S)  # the stalled replica's feed is now waiting on it
            revoked = httpx.delete(f"{urls[other]}/admin/keys/{made['id']}", headers=admin,
                                   timeout=30)
            assert revoked.status_code == 200, revoked.text
            start = time.monotonic()
            assert status(urls[other], made["key"]) == 401  # at once where revoked
            while (code := status(urls[stalled], made["key"])) == 200:
                if time.monotonic() - start > RELOAD_S + MARGIN_S:
                    break
                time.sleep(0.1)
            took = time.monotonic() - start
            # and the hung connection is given up and made again (TUNELOOP_SHARED_TIMEOUT_S,
            # 5 s: silent that long, then no answer for as long)
            while len(feeds := feed_backends(pg_url)) < 3 \
                    and time.monotonic() - stopped_at < 2 * TIMEOUT_S + MARGIN_S:
                time.sleep(0.1)
            remade = time.monotonic() - stopped_at
        finally:
            os.kill(backend, signal.SIGCONT)
        print(f"\nrevoked key {'refused' if code == 401 else 'still accepted'} by the replica "
              f"whose LISTEN connection hung after {took:.2f} s (reload every {RELOAD_S:g} s); "
              f"its connection made again {remade:.2f} s after it hung; "
              f"load {os.getloadavg()[0]:.1f}")
        assert code == 401, f"still accepted {took:.1f} s after the revocation"
        assert len(feeds) == 3, f"no new LISTEN connection {remade:.1f} s after it hung"
