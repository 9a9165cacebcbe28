"""`tuneloop sql` (POST /admin/sql) on Postgres with several replicas: one query at a time per
token across all of them (an advisory lock the query's session holds), not one per replica,
and what one query may build on the server bounded (storage/sql_check_pg.py)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from storage.sql_check_pg import check_pg_query
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer
from tuneloop.errors import Forbidden

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
    # wait (as the other token) until the query runs: its turn is taken before it starts
    running = ("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
               "datname = current_database() AND application_name = 'tuneloop-sql' AND "
               "state = 'active'")
    while post_sql(second, running, ADMIN_TOKEN).json()["rows"] != [[1]]:
        assert long.is_alive(), [a.text[:200] for a in answers]
    refused = post_sql(second, "SELECT 2", REVIEWER_TOKEN)
    assert refused.status_code == 429, ("the second replica ran the token's query alongside "
                                        f"the first: {refused.text[:200]}")
    assert refused.json()["error"]["code"] == "query_running"
    assert "another replica" in refused.json()["error"]["message"]
    # another token is not held up by it, on either replica
    assert post_sql(second, "SELECT 3", ADMIN_TOKEN).json()["rows"] == [[3]]
    long.join()
    assert answers[0].json()["error"]["code"] == "query_timeout", answers[0].text
    # the turn ends with the query (here stopped by the time limit), on whichever replica
    assert post_sql(second, "SELECT 4", REVIEWER_TOKEN).json()["rows"] == [[4]]
    assert post_sql(first, "SELECT 5", REVIEWER_TOKEN).json()["rows"] == [[5]]


BUILT_TOO_BIG = [
    # r12w MED 3: ~2 GB in the backend, 5.9 GB when sent to three replicas at once
    "select length(string_agg(repeat('x',1000000), '')) from generate_series(1,1000)",
    "select length(repeat('x', 200000000))",
    "SELECT pg_catalog.repeat('xx', 50001)",
    'SELECT "repeat"(\'x\', 200000000)',
    "SELECT repeat /* a comment */ ('x', 200000000)",
    "SELECT repeat(model, 1000000) FROM interactions",
    "SELECT repeat('x', (SELECT 200000000))",
    "SELECT lpad('7', 100000000, '0')",
    "SELECT rpad(model, 100000000) FROM interactions",
    "SELECT format('%100000000s', 'x')",
    "SELECT format('%*s', 100000000, 'x')",
    "SELECT format(model, 1) FROM interactions",
    "SELECT array_fill(0, ARRAY[100000000])",
]


@pytest.mark.parametrize("sql", BUILT_TOO_BIG)
def test_one_call_may_not_build_a_huge_value(sql: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_pg_query(sql)
    assert refused.value.code == "read_only"
    assert "1 GB" in refused.value.message


@pytest.mark.parametrize("sql", [
    "SELECT set_config('work_mem', '64GB', true)",
    "WITH s AS MATERIALIZED (SELECT pg_catalog.\"set_config\"('work_mem', '64GB', true)) "
    "SELECT * FROM s",
])
def test_a_query_may_not_raise_its_memory_settings(sql: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_pg_query(sql)
    assert "set_config" in refused.value.message


@pytest.mark.parametrize("sql", [
    "SELECT repeat('-', 40), lpad('7', 3, '0'), rpad('a', 2, '.'), repeat('ab'::text, 50000)",
    "SELECT lpad(model, 20, '.'), format('%s: %-12s|%%', 1, model) FROM interactions",
    "SELECT model, string_agg(DISTINCT endpoint, ',') FROM interactions GROUP BY model",
    # names inside strings, quoted names and comments are not calls
    "SELECT 'repeat(''x'', 200000000)', $$lpad('7', 100000000)$$ -- repeat('x', 200000000)",
    "SELECT 1 AS repeat /* repeat('x', 200000000) */",
])
def test_small_builders_and_aggregates_pass_the_check(sql: str) -> None:
    check_pg_query(sql)


@on_postgres
def test_huge_builders_are_refused_and_analytics_answered(proxy: ProxyServer) -> None:
    for sql in BUILT_TOO_BIG[:2]:
        refused = post_sql(proxy, sql, REVIEWER_TOKEN)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "read_only"
    answer = post_sql(proxy, "SELECT g % 3, string_agg(g::text, ',' ORDER BY g), "
                      "repeat('-', 3), lpad(g::text, 3, '0') FROM generate_series(1, 6) g "
                      "GROUP BY 1, 4 ORDER BY 4", REVIEWER_TOKEN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"][:2] == [[1, "1", "---", "001"], [2, "2", "---", "002"]]
