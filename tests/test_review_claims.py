"""Claims on queue items against a real proxy and a real DuckDB file: reviewers asking at once
get different items, a lease expires and the item returns, leases survive a restart of a real
`tuneloop serve` process, and a review of another reviewer's claimed item is a clear 409."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, FakeUpstream, ProxyServer, both_stores
from tests.proc import ProxyProcess, served_store
from tests.test_review_api import logged
from tuneloop.client import AdminClient
from tuneloop.errors import Conflict

pytestmark = both_stores


def next_id(client: AdminClient, reviewer: str, **kwargs: Any) -> str | None:
    item = client.next_item(reviewer=reviewer, **kwargs)["item"]
    return None if item is None else str(item["id"])


def wait_past(timestamp: str) -> None:
    """Sleep until a claim's expiry has passed (waiting on the server's clock, not timing)."""
    until = datetime.fromisoformat(timestamp).timestamp()
    while time.time() <= until + 0.05:
        time.sleep(0.05)


def test_reviewers_asking_at_once_get_different_items(proxy: ProxyServer) -> None:
    ids = logged(proxy, *(f"question {n}" for n in range(8)))
    names = [f"rev{n}" for n in range(6)]
    clients = {name: proxy.admin(REVIEWER_TOKEN) for name in names}
    got: dict[str, str | None] = {}
    barrier = threading.Barrier(len(names))

    def ask(name: str) -> None:
        barrier.wait()
        got[name] = next_id(clients[name], name)

    threads = [threading.Thread(target=ask, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    taken = list(got.values())
    assert len(taken) == len(names) and None not in taken
    assert len(set(taken)) == len(names), f"two reviewers got the same item: {got}"
    assert set(taken) <= set(ids)
    # the newest items went first; each shows its holder
    assert set(taken) == set(sorted(ids, reverse=True)[:len(names)])
    for name, item_id in got.items():
        assert item_id is not None
        item = clients[name].interaction(item_id)
        assert item["claimed_by"] == name and item["claimed_until"]


def test_next_keeps_the_own_claim_skip_releases_and_others_are_refused(
        proxy: ProxyServer) -> None:
    older, newer = logged(proxy, "older", "newer")
    client = proxy.admin(REVIEWER_TOKEN)
    assert next_id(client, "ann") == newer
    assert next_id(client, "ann") == newer  # a reload gives the same item back
    assert next_id(client, "bob") == older
    assert next_id(client, "cat") is None  # everything is claimed
    # renewing is the holder's right only
    renewed = client.claim(newer, reviewer="ann")
    assert renewed["claimed_by"] == "ann"
    with pytest.raises(Conflict) as refused:
        client.claim(newer, reviewer="bob")
    assert refused.value.code == "claimed" and "ann" in refused.value.message
    # a review of ann's item by bob is a clear conflict; nothing changes
    with pytest.raises(Conflict) as conflict:
        client.review(newer, "approve", reviewer="bob", expected_revision=0)
    assert conflict.value.code == "claimed" and "ann" in conflict.value.message
    assert client.interaction(newer)["review"] == "pending"
    with pytest.raises(Conflict):
        client.undo(newer, reviewer="bob")
    # bulk skips it and says so
    bulk = client.bulk_review("reject", reviewer="bob", ids=[newer])
    assert bulk["counts"] == {"claimed": 1} and bulk["skipped_claimed"] == 1
    # ann skips: her claim moves on (none left for her) and the item is free again
    assert next_id(client, "ann", skip=[newer]) is None
    assert client.interaction(newer)["claimed_by"] is None
    assert next_id(client, "cat") == newer
    # release is the holder's own; a review by the holder releases the claim
    assert client.release(newer, reviewer="bob") is False
    done = client.review(older, "approve", reviewer="bob", expected_revision=0)
    assert done["status"] == "ok"
    assert client.interaction(older)["claimed_by"] is None
    assert client.release(newer, reviewer="cat") is True
    assert client.interaction(newer)["claimed_by"] is None
    # bob undoes his approval: the item is pending again and his, not the next reviewer's
    undone = client.undo(older, reviewer="bob")
    assert undone["review"] == "pending" and undone["claimed_by"] == "bob"
    assert next_id(client, "cat") == newer
    assert next_id(client, "dan") is None


def test_a_lease_expires_and_the_item_returns(proxy_factory: Any) -> None:
    proxy: ProxyServer = proxy_factory(review_claim_s=1)
    older, newer = logged(proxy, "first", "second")
    client = proxy.admin(REVIEWER_TOKEN)
    first = client.next_item(reviewer="ann")["item"]
    assert first["id"] == newer
    assert next_id(client, "bob") == older
    wait_past(first["claimed_until"])
    assert client.interaction(newer)["claimed_by"] is None
    # ann walked away: her expired claim no longer holds the newest item back
    taken = client.next_item(reviewer="cat")["item"]
    assert taken["id"] == newer and taken["claimed_by"] == "cat"
    client.review(newer, "approve", reviewer="cat", expected_revision=0)


def test_claims_survive_a_server_restart(tmp_path: Path, fake_openai: FakeUpstream,
                                        store: str) -> None:
    db, state_dir = served_store(store, tmp_path, "claims.duckdb")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_REVIEWER_TOKEN": REVIEWER_TOKEN,
           "TUNELOOP_INGEST_INTERVAL_MS": "20", "TUNELOOP_REVIEW_CLAIM_S": "600"}
    with ProxyProcess(db, fake_openai.base_url, env, state_dir=state_dir) as proc:
        llm = openai.OpenAI(base_url=proc.url + "/v1", api_key="k", max_retries=0)
        ids = [llm.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
        ).headers["x-tuneloop-id"] for text in ("a", "b")]
        with AdminClient(proc.url, REVIEWER_TOKEN) as client:
            deadline = time.monotonic() + 10
            while client.progress(reviewer="ann")["pending"] < 2:
                assert time.monotonic() < deadline, "interactions were not ingested"
                time.sleep(0.05)
            held = client.next_item(reviewer="ann")["item"]
    assert held["id"] == max(ids)
    with ProxyProcess(db, fake_openai.base_url, env, state_dir=state_dir) as restarted, \
            AdminClient(restarted.url, REVIEWER_TOKEN) as client:
        item = client.interaction(held["id"])
        assert (item["claimed_by"], item["claimed_until"]) == ("ann", held["claimed_until"])
        assert next_id(client, "bob") == min(ids)
        with pytest.raises(Conflict) as conflict:
            client.review(held["id"], "approve", reviewer="bob", expected_revision=0)
        assert conflict.value.code == "claimed"
        assert next_id(client, "ann") == held["id"]  # ann's reload after the restart
        progress = client.progress(reviewer="bob")
        assert progress["pending"] == 2 and progress["claimed_by_others"] == 1
