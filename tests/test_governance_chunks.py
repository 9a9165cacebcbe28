"""Forget and retention delete a chunk of interactions a transaction (`delete_chunk_rows`):
a large deletion must not hold the store's one write turn (every replica's, on Postgres)
from start to end, or ingest and reviewers wait on it for seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from storage.records import insert_interactions, to_arrow
from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores
from tests.store_support import connected

pytestmark = both_stores

ROWS = 3_000
CHUNK = 20


def seed(store: str, user: str, age: timedelta) -> list[str]:
    """ROWS interactions of `user` logged `age` ago, written before the proxy starts."""
    created = datetime.now(UTC) - age
    rows = [{"id": f"0190a000-0000-7000-8000-{n:012d}", "created_at": created,
             "endpoint": "chat.completions", "traffic": "production", "user_id": user,
             "request": orjson.dumps({"messages": [{"role": "user", "content": f"q {n}"}]}
                                     ).decode()} for n in range(ROWS)]
    with connected(store) as con:
        insert_interactions(con, to_arrow(rows))
    return [str(r["id"]) for r in rows]


def write_meanwhile(proxy: ProxyServer, delete: Callable[[httpx.Client], httpx.Response],
                    kept: str) -> tuple[float, float, httpx.Response]:
    """Start the deletion, then (once it runs) review `kept`; when each of them ended."""
    ended: dict[str, Any] = {}
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def run() -> None:
        with httpx.Client(base_url=proxy.url, headers=auth, timeout=300) as http:
            ended["response"] = delete(http)
        ended["deletion"] = time.monotonic()

    deleting = threading.Thread(target=run)
    deleting.start()
    deadline = time.monotonic() + 60
    while True:  # reads go on beside the writes: wait for a chunk's commit
        left = proxy.sql("SELECT count(*) FROM interactions")[0][0]
        assert left > 1, "all went at once: no state between the first and the last row"
        if left <= ROWS + 1 - CHUNK:
            break
        assert time.monotonic() < deadline, "nothing was deleted"
        time.sleep(0.005)
    proxy.admin().request("POST", f"/admin/interactions/{kept}/review", json={
        "action": "approve", "reviewer": "rita", "expected_revision": 0})
    reviewed = time.monotonic()
    deleting.join(300)
    return reviewed, ended["deletion"], ended["response"]


def test_retention_lets_other_writes_through_between_chunks(
        store: str, proxy_factory: Callable[..., ProxyServer]) -> None:
    seed(store, "old-user", timedelta(days=90))
    proxy = proxy_factory(delete_chunk_rows=CHUNK)
    kept = str(proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "recent"}]
    ).headers["x-tuneloop-id"])
    proxy.wait_logged(ROWS + 1)
    reviewed, deleted, response = write_meanwhile(
        proxy, lambda http: http.post("/admin/retention", json={"days": 30}), kept)
    assert response.status_code == 200, response.text
    assert response.json()["deleted"]["interactions"] == ROWS
    assert reviewed < deleted, "the review waited for the whole retention run"
    assert proxy.sql("SELECT id FROM interactions") == [[kept]]
    assert proxy.sql("SELECT count(*) FROM reviews WHERE state = 'approved'") == [[1]]


def test_forget_lets_other_writes_through_between_chunks(
        store: str, proxy_factory: Callable[..., ProxyServer]) -> None:
    doomed = seed(store, "heavy-user", timedelta(days=1))
    proxy = proxy_factory(delete_chunk_rows=CHUNK)
    kept = str(proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "another user"}]
    ).headers["x-tuneloop-id"])
    proxy.wait_logged(ROWS + 1)
    proxy.admin().request("POST", f"/admin/interactions/{doomed[-1]}/tags",
                          json={"add": ["heavy"], "reviewer": "rita"})
    reviewed, deleted, response = write_meanwhile(
        proxy, lambda http: http.post("/admin/forget", json={"user": "heavy-user"}), kept)
    assert response.status_code == 200, response.text
    counts = response.json()["deleted"]
    assert counts["interactions"] == ROWS and counts["interaction_tags"] == 1, counts
    assert reviewed < deleted, "the review waited for the whole forget"
    assert proxy.sql("SELECT id FROM interactions") == [[kept]]
