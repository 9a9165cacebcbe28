"""Three `tuneloop serve` processes on loopback sharing one Postgres, in front of the fake
upstream; 64 concurrent clients spread across them; one replica killed with `kill -9` mid-run
and restarted on the same spool. Every answered request (x-tuneloop-id) is in the store exactly
once; a review made through one replica is seen through another at once (and a second review
on the same revision through a third conflicts); a route change through one applies on all
(LISTEN/NOTIFY: the periodic reload is set to a minute here, so only a notification can do it
within the poll's bound) and the delay each replica took is printed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.replicas import TOKEN, ReplicaSet, drive
from tuneloop.client import AdminClient
from tuneloop.errors import Conflict

pytestmark = pytest.mark.reliability

APPLY_BOUND_S = 10.0  # far above a notification's delay, far below the 60 s periodic reload


def routed_model(url: str) -> str | None:
    """The model a chat request to alias `support` reaches upstream, through this replica
    (None when it can't be reached)."""
    try:
        response = httpx.post(url + "/v1/chat/completions", timeout=30,
                              headers={"authorization": "Bearer sk-replicas"},
                              json={"model": "support",
                                    "messages": [{"role": "user", "content": "which model?"}]})
    except httpx.HTTPError:
        return None
    assert response.status_code == 200, response.text
    model: str = response.json()["model"]
    return model


def change_route(group: ReplicaSet, through: int, model: str, delays: dict[int, float]) -> None:
    """PUT a route through one replica, then poll every replica until it routes there;
    delays[i] = seconds from the PUT's answer until replica i routed to `model`."""
    with AdminClient(group.replicas[through].url, TOKEN) as admin:
        admin.put_routes({"support": {"targets": [{"model": model}]}},
                         expect_seq=admin.routes_with_seq()["seq"])
    changed = time.monotonic()
    pending = set(range(len(group.replicas)))
    while pending and time.monotonic() - changed < APPLY_BOUND_S:
        for i in sorted(pending):
            if routed_model(group.replicas[i].url) == model:
                delays[i] = time.monotonic() - changed
                pending.discard(i)


def test_three_replicas_one_store_kill_9_loses_and_doubles_nothing(
        pg_url: str, tmp_path: Path) -> None:
    env = {"TUNELOOP_SHARED_RELOAD_S": "60", "TUNELOOP_INGEST_INTERVAL_MS": "200"}
    with ReplicaSet(pg_url, tmp_path, 3, env=env) as group:
        urls = [r.url for r in group.replicas]
        first: dict[int, float] = {}
        change_route(group, 0, "model-a", first)
        assert sorted(first) == [0, 1, 2], first

        delays: dict[int, float] = {}

        def restart_then_change_route() -> None:
            group.restart(1)  # same port, same spool: replayed
            change_route(group, 1, "model-b", delays)  # under load, through the restarted one

        events = [(3.0, lambda: group.kill(1)),  # mid-run: no shutdown, no drain
                  (5.0, restart_then_change_route)]
        load = asyncio.run(drive(urls, 64, 10.0, events))
        group.wait_drained()

        print(f"\nanswered {len(load.answered)}, failed {load.failed} (replica 1 down), "
              f"route change applied after (s): idle "
              + ", ".join(f"replica {i}: {first[i]:.3f}" for i in sorted(first))
              + "; under load " + ", ".join(f"replica {i}: {delays[i]:.3f}"
                                            for i in sorted(delays)))
        assert len(load.answered) > 500 and load.failed > 0  # the kill really hit clients
        assert sorted(delays) == [0, 1, 2], f"not applied everywhere within " \
                                            f"{APPLY_BOUND_S} s: {delays}"

        with psycopg.connect(pg_url) as con:
            rows = con.execute("SELECT id, count(*) FROM interactions GROUP BY id").fetchall()
        stored = {row[0]: row[1] for row in rows}
        assert load.answered - stored.keys() == set()  # every answered request is in
        assert [i for i, n in stored.items() if n > 1] == []  # none twice

        item = sorted(load.answered)[0]
        clients = [AdminClient(url, TOKEN) for url in urls]
        try:
            done = clients[0].review(item, "approve", reviewer="ann", expected_revision=0)
            assert done["revision"] == 1
            seen = clients[1].interaction(item)  # another replica, at once
            assert (seen["review"], seen["revision"]) == ("approved", 1)
            with pytest.raises(Conflict):  # a third replica reviewing the old revision
                clients[2].review(item, "reject", reviewer="bob", expected_revision=0)
        finally:
            for client in clients:
                client.close()
