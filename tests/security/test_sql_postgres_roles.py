"""`tuneloop sql` (POST /admin/sql) on Postgres when the role it runs as has more than read
rights: a superuser (what docker's postgres image makes POSTGRES_USER), REPLICATION, the
file-reading predefined roles. A READ ONLY transaction does not stop those rights (files,
replication slots that outlive the rollback, WAL switches), so the replica refuses the
endpoint for such a role and warns at start; the name check refuses the functions too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from storage.sql_check_pg import check_pg_query
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer
from tests.pg_cluster import PgCluster
from tuneloop.errors import Forbidden

on_postgres = pytest.mark.parametrize("store", ["postgres"], indirect=True)

ESCAPES = [
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT pg_read_binary_file('postgresql.conf')",
    "SELECT pg_catalog.pg_read_file('/etc/hostname')",
    'SELECT pg_catalog."pg_read_file"(\'/etc/hostname\')',
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT * FROM PG_LS_WALDIR()",
    "SELECT pg_ls_logdir()",
    "SELECT pg_stat_file('postgresql.conf')",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT * FROM pg_catalog.pg_shadow",
    "SELECT * FROM pg_hba_file_rules",
    "SELECT pg_create_physical_replication_slot('x', true)",
    'SELECT "pg_create_logical_replication_slot"(\'x\', \'test_decoding\')',
    "SELECT pg_drop_replication_slot('x')",
    "SELECT pg_copy_physical_replication_slot('x', 'y')",
    "SELECT pg_replication_slot_advance('x', '0/0')",
    "SELECT * FROM pg_logical_slot_get_changes('x', NULL, NULL)",
    "SELECT pg_switch_wal()",
    "SELECT pg_catalog . pg_switch_wal ()",
    "SELECT pg_create_restore_point('x')",
    "SELECT pg_backup_start('x')",
    "SELECT pg_stat_reset()",
    "SELECT pg_stat_reset_shared('bgwriter')",
    "SELECT pg_stat_reset_single_table_counters(1)",
    "SELECT pg_stat_statements_reset()",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_export(1, '/tmp/x')",
    'SELECT "lo_unlink"(1)',
    "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int)",
    "SELECT public.dblink_connect('x')",
    "SELECT pg_terminate_backend(1)",
    "SELECT pg_catalog.pg_cancel_backend(1)",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_the_name_check_refuses_the_server_reaching_functions(sql: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_pg_query(sql)
    assert refused.value.code == "read_only"


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM pg_largeobject_metadata",
    "SELECT slot_name FROM pg_replication_slots",
    "SELECT lower('PG_READ_FILEX'), 'lo' || '_x', pg_backend_pid()",
    "SELECT * FROM pg_stat_activity",
])
def test_the_name_check_leaves_ordinary_reads(sql: str) -> None:
    check_pg_query(sql)


def post_sql(proxy: ProxyServer, sql: str, token: str = REVIEWER_TOKEN) -> httpx.Response:
    return httpx.post(f"{proxy.url}/admin/sql", json={"sql": sql},
                      headers={"authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture
def roles(pg_cluster: PgCluster, store: str) -> Iterator[Callable[[str], str]]:
    """`make(options)`: a new LOGIN role with these options (`REPLICATION`, ...), granted
    SELECT on the store's tables once they exist; its URL. Dropped at the end."""
    dbname = store.rsplit("/", 1)[-1]
    made: list[str] = []

    def make(options: str = "") -> str:
        name = f"tl_role_{secrets.token_hex(4)}"
        with psycopg.connect(pg_cluster.admin_url(dbname), autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{name}" LOGIN {options}'.encode())
            admin.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"'.encode())
            admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{name}"'.encode())
        made.append(name)
        return pg_cluster.url(dbname, name)

    yield make
    for name in made:
        with psycopg.connect(pg_cluster.admin_url(dbname), autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{name}"'.encode())
            admin.execute(f'DROP ROLE IF EXISTS "{name}"'.encode())


def slots(pg_cluster: PgCluster) -> list[Any]:
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        return admin.execute("SELECT slot_name FROM pg_replication_slots").fetchall()


@on_postgres
def test_a_superuser_store_role_gets_no_sql_until_sql_db_names_a_reader(
        proxy_factory: Any, pg_cluster: PgCluster, store: str, roles: Callable[[str], str],
        caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    superuser_url = pg_cluster.admin_url(store.rsplit("/", 1)[-1])
    with caplog.at_level(logging.WARNING, logger="tuneloop.proxy"):
        proxy = proxy_factory(db=superuser_url)
    warned = [r.getMessage() for r in caplog.records if "/admin/sql" in r.getMessage()]
    assert warned and "superuser" in warned[0] and "TUNELOOP_SQL_DB" in warned[0]
    for sql in ("SELECT 1",
                # a function the name check does not know: the role check holds the line
                "SELECT pg_catalog.pg_current_wal_lsn()"):
        for token in (REVIEWER_TOKEN, ADMIN_TOKEN):
            refused = post_sql(proxy, sql, token)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "sql_role_unsafe"
            assert "superuser" in error["message"] and "TUNELOOP_SQL_DB" in error["message"]
    assert slots(pg_cluster) == []
    # the store itself works for the superuser role as before
    proxy.admin().put_routes({"support": {"targets": [{"model": "gpt-4o-mini"}]}})

    reader = roles("")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tuneloop.proxy"):
        second = proxy_factory(db=superuser_url, sql_db=reader, state_dir=tmp_path / "second")
    assert not [r for r in caplog.records if "/admin/sql" in r.getMessage()]
    answer = post_sql(second, "SELECT current_user = session_user, count(*) FROM routes")
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [[True, 1]]


@on_postgres
@pytest.mark.parametrize("options", ["REPLICATION", "IN ROLE pg_read_server_files",
                                     "IN ROLE pg_signal_backend", "SUPERUSER"])
def test_a_sql_db_role_with_more_than_read_rights_is_refused(
        proxy_factory: Any, roles: Callable[[str], str], pg_cluster: PgCluster,
        options: str) -> None:
    proxy = proxy_factory()
    powerful = roles(options)
    second = proxy_factory(sql_db=powerful, state_dir=proxy.settings.state_dir.parent / "b")
    refused = post_sql(second, "SELECT 1")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "sql_role_unsafe"
    right = options.split()[-1].lower()
    assert right in refused.json()["error"]["message"]
    # the store's own plain role reads as before
    assert post_sql(proxy, "SELECT current_user").json()["rows"] == [["tuneloop"]]
