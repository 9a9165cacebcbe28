"""`tuneloop sql` on Postgres: a row wider than the answer's cap never reaches the replica.

The server measures each row (migration 49's function over `row_to_json`) before sending it
and ends the query at the first one over `sql_max_bytes`; before, one `SELECT repeat('x',
N)` was fetched whole into the replica (N bytes and more of its memory) before the 413. The
wrapper keeps the query's rows, columns and order, and the query must parse on its own (it
can't close the wrapper's bracket and send unmeasured rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, ProxyServer

pytestmark = pytest.mark.parametrize("store", ["postgres"], indirect=True)

WIDE = 200_000_000


def wide(chars: int, text: str = "x") -> str:
    """A value of this many characters, built under the cap on one `repeat` (100,000
    characters, storage/sql_check_pg.py) by an aggregate, as a query would have to."""
    per = 100_000 // len(text)
    return (f"(SELECT string_agg(repeat('{text}', {per}), '') "
            f"FROM generate_series(1, {chars // per}))")


def post_sql(proxy: ProxyServer, sql: str) -> httpx.Response:
    return httpx.post(f"{proxy.url}/admin/sql", json={"sql": sql}, timeout=120,
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"})


def peak_rss_mb() -> int:
    """This process's peak resident memory (the proxy runs in it) since the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@pytest.mark.parametrize("sql", [
    f"SELECT {wide(WIDE)}",
    f"SELECT 1 AS id, {wide(WIDE // 2, 'é')} AS text",
    # the wide row comes after narrow ones
    f"SELECT g, CASE WHEN g = 3 THEN {wide(WIDE)} END FROM generate_series(1, 3) g",
])
def test_one_row_over_the_cap_is_refused_by_the_server(proxy_factory: Any, sql: str) -> None:
    proxy = proxy_factory(sql_max_bytes=1024 * 1024, sql_timeout_s=60)
    assert post_sql(proxy, "SELECT 1").json()["rows"] == [[1]]
    reset_peak_rss()
    base = peak_rss_mb()
    answer = post_sql(proxy, sql)
    grown = peak_rss_mb() - base
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["error"]["code"] == "answer_too_large"
    assert grown < 60, f"the replica's memory grew by {grown} MB for a refused answer"
    assert post_sql(proxy, "SELECT 2").json()["rows"] == [[2]]


def test_rows_under_the_cap_come_back_as_the_query_gave_them(proxy_factory: Any) -> None:
    proxy = proxy_factory(sql_max_bytes=1024 * 1024)
    cases = {
        "SELECT g FROM generate_series(1, 5) g ORDER BY g DESC;": [[5], [4], [3], [2], [1]],
        "SELECT 1 AS a, 2 AS a, 'x' -- a comment at the end": [[1, 2, "x"]],
        "VALUES (1, 'a%'), (2, '%s') ;  ;": [[1, "a%"], [2, "%s"]],
        "WITH t(n) AS (SELECT 7) SELECT n * 2 FROM t": [[14]],
        "(SELECT 1) UNION ALL (SELECT 2) ORDER BY 1 DESC LIMIT 1": [[2]],
        f"SELECT length({wide(500_000)})": [[500000]],
        "TABLE _migrations ORDER BY version DESC LIMIT 0": [],
        "SELECT pg_sleep(0), NULL, (1, 'a'), ARRAY[1, 2], '{\"a\": 1}'::jsonb": [
            ["", None, ["1", "a"], [1, 2], '{"a": 1}']],
        "SELECT FROM _migrations LIMIT 1": [[]],
    }
    for sql, rows in cases.items():
        answer = post_sql(proxy, sql)
        assert answer.status_code == 200, (sql, answer.text[:300])
        assert answer.json()["rows"] == rows, sql
    columns = post_sql(proxy, "SELECT 1 AS a, 2 AS a, 3").json()["columns"]
    assert columns == ["a", "a", "?column?"]
    answer = post_sql(proxy, f"SELECT {wide(500_000)} AS w").json()
    assert answer["rows"] == [["x" * 500000]]


@pytest.mark.parametrize("sql", [
    f"SELECT 1) AS q WHERE false UNION ALL SELECT {wide(WIDE)} FROM (SELECT 1",
    "SELECT 1 /* never closed",
    "SELECT 1; SELECT 2",
    "SHOW search_path",
])
def test_a_query_that_is_no_statement_of_its_own_is_refused(proxy_factory: Any,
                                                            sql: str) -> None:
    proxy = proxy_factory(sql_max_bytes=1024 * 1024, sql_timeout_s=60)
    reset_peak_rss()
    base = peak_rss_mb()
    answer = post_sql(proxy, sql)
    assert answer.status_code == 400, answer.text[:300]
    assert peak_rss_mb() - base < 60
