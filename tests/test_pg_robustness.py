"""A replica on Postgres when the database misbehaves under it: connections killed by the
server (a restart, an administrator's pg_terminate_backend), and Postgres's own types in
`tuneloop sql`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.conftest import ProxyServer


def _kill_tuneloop_backends(pg_cluster: Any, url: str) -> int:
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", [dbname]).fetchall()
    return len(rows)


def test_connections_the_server_killed_are_replaced_not_served(
        proxy_factory: Callable[..., ProxyServer], pg_url: str, pg_cluster: Any) -> None:
    proxy = proxy_factory(db=pg_url)
    client = proxy.openai()
    client.chat.completions.create(model="gpt-4o-mini",
                                   messages=[{"role": "user", "content": "before"}])
    proxy.wait_logged(1)
    assert _kill_tuneloop_backends(pg_cluster, pg_url) >= 1
    admin = proxy.admin()
    for _ in range(8):  # more than the pool holds: each draw would be a dead connection
        assert admin.interactions()["items"]
    for n in range(3):
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": f"after {n}"}])
    proxy.wait_logged(4)


def test_sql_answers_postgres_only_types_as_text(
        proxy_factory: Callable[..., ProxyServer], pg_url: str) -> None:
    proxy = proxy_factory(db=pg_url)
    rows = proxy.sql("SELECT '127.0.0.1'::inet AS ip, '[1,3)'::int4range AS r, "
                     "'{\"a\": 1}'::jsonb AS j, 'NaN'::float8 AS nan")
    assert rows[0][:2] == ["127.0.0.1", "[1, 3)"]
