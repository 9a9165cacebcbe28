"""The review app says when search lags behind ingest (AppTest against a real proxy on
Postgres): more interactions waiting for the background indexer than search matches at query
time, as /metrics and /healthz count them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from storage.records import insert_interactions, to_arrow
from storage.search_index import queue_for_index
from storage.store import open_store
from tests.conftest import ProxyServer
from tests.test_ui_app import app  # noqa: F401  (the fixture)

pytestmark = pytest.mark.parametrize("store", ["postgres"], indirect=True)
LAGGING = 600  # more than the 500 newest unindexed rows that search matches at query time


@pytest.fixture
def proxy(proxy_factory: Callable[..., ProxyServer]) -> ProxyServer:
    return proxy_factory(fault_injection=True)


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def list_unindexed(url: str, rows: int, *, response: str = '{"choices": []}',
                   prefix: str = "lag") -> None:
    """Interactions ingested by another replica and listed for the indexer, as ingest lists
    them (this replica's indexer is paused)."""
    records: list[dict[str, Any]] = [
        {"id": f"0190-{prefix}-{n:06d}", "created_at": 1_700_000_000_000_000 + n,
         "endpoint": "chat.completions", "model": "m", "traffic": "production",
         "request": '{"messages": [{"role": "user", "content": "hello"}]}',
         "response": response, "status_code": 200, "stream": False}
        for n in range(rows)]
    db = open_store(url)
    try:
        db.write_sync(lambda con: insert_interactions(con, to_arrow(records),
                                                      then=queue_for_index))
    finally:
        db.close()


def test_the_search_box_says_how_far_search_lags(app: Callable[..., AppTest],  # noqa: F811
                                                 proxy: ProxyServer, store: str) -> None:
    at = app("ann")
    at.switch_page("views/browse.py").run()
    assert not at.exception, at.exception
    assert not any("rows behind" in c for c in captions(at))  # nothing waits: no caption

    admin = proxy.admin()
    admin.request("POST", "/admin/faults", json={"search_index_pause_seconds": 600})
    list_unindexed(store, LAGGING)
    # one request through the proxy: its ingest wakes the (paused) indexer, which measures
    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "wake up"}])
    with proxy.http() as http:
        deadline = time.monotonic() + 30
        while http.get("/healthz").json()["search_index_lag_rows"] <= LAGGING \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    at.run()
    assert not at.exception, at.exception
    assert any(f"Search is {LAGGING + 1:,} rows behind" in c for c in captions(at)), \
        captions(at)


def test_faults_refuses_unknown_switches(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    for body in ({}, {"search_index_pause_seconds": -1}, {"search_index_pause_seconds": True},
                 {"search_index_pause_seconds": 1, "other": 2}):
        with pytest.raises(Exception, match="search_index_pause_seconds"):
            admin.request("POST", "/admin/faults", json=body)


def test_the_search_box_says_so_when_rows_too_big_for_the_tail_wait(
        app: Callable[..., AppTest], proxy: ProxyServer, store: str) -> None:  # noqa: F811
    """Fewer than 500 rows wait, but two are each bigger than the 8 MB of text search reads at
    query time (storage.search_tail): search misses them until they are indexed, and says so."""
    admin = proxy.admin()
    admin.request("POST", "/admin/faults", json={"search_index_pause_seconds": 600})
    big = '{"choices": [{"message": {"role": "assistant", "content": "%s"}}]}' % ("x" * (9 << 20))
    list_unindexed(store, 2, response=big, prefix="big")
    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "wake up"}])
    with proxy.http() as http:
        deadline = time.monotonic() + 30
        while http.get("/healthz").json()["search_index_lag_rows"] < 3 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        health = http.get("/healthz").json()
    at = app("ann")
    at.switch_page("views/browse.py").run()
    assert not at.exception, at.exception
    assert any("Search is 3 rows behind" in c for c in captions(at)), captions(at)
    assert health["search_index_lag_rows"] == 3 and health.get("search_tail_missed_rows") == 2
