"""`tuneloop sql` (POST /admin/sql) on Postgres with several replicas: one query at a time per
token across all of them (an advisory lock the query's session holds), not one per replica,
and what one query may build on the server bounded (storage/sql_check_pg.py)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer

on_postgres = pytest.mark.parametrize("store", ["postgres"], indirect=True)


def post_sql(proxy: ProxyServer, sql: str, token: str) -> httpx.Response:
    return httpx.post(f"{proxy.url}/admin/sql", json={"sql": sql},
                      headers={"authorization": f"Bearer {token}"}, timeout=60)


@on_postgres
def test_one_query_per_token_across_replicas(proxy_factory: Any) -> None:
    first = proxy_factory(sql_timeout_s=4)
    second = proxy_factory(state_dir=first.settings.state_dir.parent / "second")
    answers: list[httpx.Response] = []
    long = threading.Thread(target=lambda: answers.append(
        post_sql(first, "SELECT pg_sleep(60), 1", REVIEWER_TOKEN)))
    long.start()
    refused = None
    while long.is_alive() and refused is None:
        answer = post_sql(second, "SELECT 2", REVIEWER_TOKEN)
        if answer.status_code == 429:
            refused = answer
        else:
            assert answer.status_code == 200, answer.text
    assert refused is not None, ("the second replica ran the token's query alongside the "
                                 f"first: {[a.text[:200] for a in answers]}")
    assert refused.json()["error"]["code"] == "query_running"
    assert "another replica" in refused.json()["error"]["message"]
    # another token is not held up by it, on either replica
    assert post_sql(second, "SELECT 3", ADMIN_TOKEN).json()["rows"] == [[3]]
    long.join()
    assert answers[0].json()["error"]["code"] == "query_timeout", answers[0].text
    # the turn ends with the query (here stopped by the time limit), on whichever replica
    assert post_sql(second, "SELECT 4", REVIEWER_TOKEN).json()["rows"] == [[4]]
    assert post_sql(first, "SELECT 5", REVIEWER_TOKEN).json()["rows"] == [[5]]
