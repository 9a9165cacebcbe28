"""A replica on Postgres when the database misbehaves under it: connections killed by the
server (a restart, an administrator's pg_terminate_backend), and Postgres's own types in
`tuneloop sql`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import FakeUpstream, ProxyServer, proxy_settings


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


def test_pooled_connections_carry_tcp_keepalives_on_both_ends(pg_url: str) -> None:
    """Like the change feed's LISTEN connection (storage.notify), the pool's connections drop
    one the network lost within about shared_timeout_s (the app passes it, proxy/app.py):
    libpq's keepalive and tcp_user_timeout options, and the server's same settings, so a
    vanished replica's backends (and the locks they hold) end as soon."""
    from storage.store import open_store

    db = open_store(pg_url, tcp_timeout_s=6, read_threads=2)
    try:
        def seen(con: Any) -> dict[str, Any]:
            server = {name: con.execute(f"SHOW {name}").fetchall()[0][0] for name in (
                "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                "tcp_user_timeout")}
            return {**server, "client": con.raw.info.get_parameters()}

        for got in [db.read_sync(seen), db.write_sync(seen)]:
            assert {k: str(v) for k, v in got.items() if k != "client"} == {
                "tcp_keepalives_idle": "2", "tcp_keepalives_interval": "2",
                "tcp_keepalives_count": "3", "tcp_user_timeout": "6000"}, got  # ms
            client = got["client"]
            assert (client.get("keepalives"), client.get("keepalives_idle"),
                    client.get("keepalives_interval"), client.get("keepalives_count"),
                    client.get("tcp_user_timeout")) == ("1", "2", "2", "3", "6000"), client
    finally:
        db.close()


def test_the_proxys_pool_has_them_from_shared_timeout_s(
        fake_openai: FakeUpstream, tmp_path: Path, pg_url: str) -> None:
    """The app's pool (`proxy.app.app_store`, what `create_app` opens) from its settings."""
    from proxy.app import app_store

    db = app_store(proxy_settings(tmp_path, fake_openai.base_url, db=pg_url,
                                  shared_timeout_s=9))
    try:
        idle = db.read_sync(lambda con: con.execute("SHOW tcp_keepalives_idle").fetchall())
    finally:
        db.close()
    assert idle == [("3",)]
