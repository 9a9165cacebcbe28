"""`tuneloop sql` (POST /admin/sql) on a Postgres store, against a hostile token holder.

DuckDB's statement allowlist (storage/sql_check.py) does not apply here: Postgres itself holds
the line. Each query runs in a session of its own, in a READ ONLY transaction with a statement
timeout, through a server-side cursor (one statement; what is not sent is never fetched), and,
with the `sql_db` setting, as a role that has no write rights at all.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from storage.backend.pg_database import WRITE_LOCK
from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.pg_cluster import PgCluster
from tuneloop.cli import main

on_postgres = pytest.mark.parametrize("store", ["postgres"], indirect=True)

ROUTE = {"support": {"targets": [{"model": "gpt-4o-mini"}]}}


def post_sql(proxy: ProxyServer, sql: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{proxy.url}/admin/sql", json={"sql": sql, **extra},
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)


def routes_and_history(proxy: ProxyServer) -> tuple[Any, Any]:
    return (proxy.sql("SELECT alias, CAST(spec AS TEXT) FROM routes ORDER BY alias"),
            proxy.sql("SELECT count(*), max(seq) FROM route_history"))


@on_postgres
@pytest.mark.parametrize("sql", [
    "DELETE FROM routes",
    "UPDATE routes SET updated_by = 'mallory'",
    "INSERT INTO routes (alias, spec, updated_at) VALUES ('x', '{}', now())",
    "WITH gone AS (DELETE FROM routes RETURNING alias) SELECT * FROM gone",
    "SELECT nextval('route_history_seq')",
    "SELECT setval('route_history_seq', 100)",
    "CREATE TABLE mallory (a int)",
    "SELECT 1; DELETE FROM routes",
    "SELECT 1; COMMIT; DELETE FROM routes",
    "COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM routes",
    "SELECT set_config('transaction_read_only', 'off', false)",
    "SELECT set_config('transaction_read_only', 'off', true), 1",
    "SET ROLE postgres",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config('session_authorization', 'postgres', false)",
    "ROLLBACK; DELETE FROM routes",
    "TRUNCATE routes",
    "SELECT pg_read_file('postgresql.conf')",
    "SELECT * FROM routes FOR UPDATE",
])
def test_writes_and_escapes_are_refused_and_change_nothing(proxy: ProxyServer, sql: str) -> None:
    proxy.admin().put_routes(ROUTE)
    before = routes_and_history(proxy)
    answer = post_sql(proxy, sql)
    assert answer.status_code in (400, 403), (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] in ("read_only", "bad_request"), answer.text[:300]
    assert routes_and_history(proxy) == before
    # nothing carried over into the next query's session either
    after = post_sql(proxy, "SELECT current_setting('transaction_read_only'), current_user")
    assert after.json()["rows"] == [["on", "tuneloop"]], after.text


@on_postgres
@pytest.mark.parametrize("sql", [
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT pg_notify('tuneloop_routes', 'x')",
    "SELECT lo_create(0)",
    "SELECT lo_from_bytea(0, 'mallory')",
])
def test_what_a_read_only_transaction_allows_is_rolled_back_with_it(
        proxy: ProxyServer, sql: str) -> None:
    """Postgres lets these run in a READ ONLY transaction; the rollback (and the session's
    end) takes them back: no large object stays, no setting reaches the next query."""
    proxy.admin().put_routes(ROUTE)
    before = routes_and_history(proxy)
    post_sql(proxy, sql)
    assert routes_and_history(proxy) == before
    assert proxy.sql("SELECT count(*) FROM pg_largeobject_metadata") == [[0]]
    after = post_sql(proxy, "SELECT current_setting('default_transaction_read_only'), "
                            "current_setting('statement_timeout') <> '0'")
    assert after.json()["rows"] == [["off", True]], after.text
    assert post_sql(proxy, "DELETE FROM routes").status_code in (400, 403)


@on_postgres
@pytest.mark.parametrize("sql", [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE usename = current_user AND pid <> pg_backend_pid()",
    "SELECT PG_CANCEL_BACKEND(pid) FROM pg_stat_activity WHERE usename = current_user",
    'SELECT pg_catalog."pg_terminate_backend"(pid) FROM pg_stat_activity '
    "WHERE usename = current_user AND pid <> pg_backend_pid()",
    "SELECT query_to_xml('SELECT pg_' || 'terminate_backend(pid) FROM pg_stat_activity "
    "WHERE usename = current_user AND pid <> pg_backend_pid()', true, false, '')",
    "SELECT * FROM ts_stat('SELECT to_tsvector(''a'')')",
    'SELECT U&"pg_\\0074erminate_backend"(pid) FROM pg_stat_activity '
    "WHERE usename = current_user AND pid <> pg_backend_pid()",
    "SELECT pg_reload_conf()",
    f"SELECT pg_advisory_xact_lock({WRITE_LOCK}), pg_sleep(5)",
    f'SELECT "PG_TRY_ADVISORY_LOCK"({WRITE_LOCK})',
])
def test_the_store_roles_other_rights_are_refused_before_the_database(
        proxy: ProxyServer, sql: str) -> None:
    """Without `sql_db` the query runs as the store's role: it may not end the replicas'
    sessions (same role) nor run SQL built from text that no name check would see."""
    sessions = proxy.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tuneloop'")
    answer = post_sql(proxy, sql)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "read_only"
    assert proxy.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tuneloop'"
                     )[0][0] >= sessions[0][0] - 1  # the one the last query used may close
    proxy.admin().put_routes(ROUTE)  # the store's connections are alive


@on_postgres
def test_a_write_in_a_read_only_transaction_is_named(proxy: ProxyServer) -> None:
    answer = post_sql(proxy, "WITH x AS (SELECT nextval('route_history_seq')) SELECT * FROM x")
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "read_only"
    assert "read-only" in answer.json()["error"]["message"]


@on_postgres
def test_a_session_lock_taken_by_a_query_ends_with_it(proxy: ProxyServer) -> None:
    """A session advisory lock outlives ROLLBACK: on a pooled connection it would block every
    write of every replica (they take the same key) for as long as the connection lives."""
    taken = post_sql(proxy, f"SELECT pg_advisory_lock({WRITE_LOCK})")
    assert taken.status_code == 403, taken.text  # refused by name, and were it not:
    # another replica's write (its own session) gets the lock: nobody holds it any more
    with psycopg.connect(str(proxy.settings.db), autocommit=True) as replica, replica.transaction():
        free = replica.execute("SELECT pg_try_advisory_xact_lock(%s)", [WRITE_LOCK]).fetchone()
    assert free == (True,)
    proxy.admin().put_routes(ROUTE)
    assert proxy.sql("SELECT count(*) FROM routes") == [[1]]


@on_postgres
def test_a_long_query_is_stopped_by_the_statement_timeout(proxy_factory: Any) -> None:
    proxy = proxy_factory(sql_timeout_s=1)
    for sql in ("SELECT pg_sleep(600)",
                "SELECT count(*) FROM generate_series(1, 10000000000)",
                "SELECT 1 FROM pg_sleep(300), generate_series(1, 3)"):
        answer = post_sql(proxy, sql)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "query_timeout"
    assert post_sql(proxy, "SELECT 1").json()["rows"] == [[1]]


@on_postgres
def test_huge_answers_are_capped(proxy_factory: Any) -> None:
    proxy = proxy_factory(sql_max_bytes=64 * 1024)
    huge = post_sql(proxy, "SELECT repeat('x', 100000) FROM generate_series(1, 100000)")
    assert huge.status_code == 413, huge.text[:300]
    assert huge.json()["error"]["code"] == "answer_too_large"
    assert len(huge.content) < 1000
    rows = post_sql(proxy, "SELECT g FROM generate_series(1, 1000000) g", max_rows=5).json()
    assert rows["rows"] == [[1], [2], [3], [4], [5]] and rows["truncated"] is True


@on_postgres
def test_percent_and_question_marks_are_sql_not_placeholders(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"support%bot": {"targets": [{"model": "gpt-4o-mini"}]},
                              "sales": {"targets": [{"model": "gpt-4o"}]}})
    assert proxy.sql("SELECT alias FROM routes WHERE alias LIKE 'sup%'") == [["support%bot"]]
    assert proxy.sql("SELECT alias FROM routes WHERE alias LIKE '%\\%%' ESCAPE '\\'") == [
        ["support%bot"]]
    assert proxy.sql("SELECT '{\"a\": 1}'::jsonb ? 'a', '{\"a\": 1}'::jsonb ?| array['b'], "
                     "'[1,2]'::jsonb ?& array['1']") == [[True, False, False]]
    assert proxy.sql("SELECT alias FROM routes WHERE spec::jsonb ? 'targets' "
                     "AND alias = 'sales'") == [["sales"]]
    assert proxy.sql("SELECT format('%s-%s', 'a', '%'), '%s', '?', 10 % 3") == [
        ["a-%", "%s", "?", 1]]
    assert proxy.sql("SELECT spec->'targets'->0->>'model' FROM routes WHERE alias = 'sales'"
                     ) == [["gpt-4o"]]


@pytest.fixture
def reader(pg_cluster: PgCluster, store: str) -> Iterator[Callable[[], str]]:
    """A role that may only read the test database: its URL, once the tables exist."""
    name = f"tl_reader_{secrets.token_hex(4)}"
    dbname = store.rsplit("/", 1)[-1]
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN'.encode())

    def grant() -> str:
        with psycopg.connect(store, autocommit=True) as owner:  # the tables' owner grants
            owner.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"'.encode())
            owner.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{name}"'.encode())
        return pg_cluster.url(dbname, name)

    yield grant
    with psycopg.connect(pg_cluster.admin_url(dbname), autocommit=True) as admin:
        admin.execute(f'DROP OWNED BY "{name}"'.encode())
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{name}"'.encode())


@on_postgres
def test_the_sql_db_role_reads_and_the_database_refuses_its_writes(
        proxy_factory: Any, pg_cluster: PgCluster, store: str,
        reader: Callable[[], str], tmp_path: Path) -> None:
    role_url = pg_cluster.url(store.rsplit("/", 1)[-1], "nobody_yet")
    proxy = proxy_factory(sql_db=role_url.replace("nobody_yet", "tl_missing_role"))
    refused = post_sql(proxy, "SELECT 1")
    assert refused.status_code == 503, refused.text  # a wrong sql_db is named, not ignored
    assert "read-only SQL" in refused.json()["error"]["message"]
    url = reader()
    proxy = proxy_factory(sql_db=url, state_dir=tmp_path / "second")  # a replica of its own
    proxy.admin().put_routes(ROUTE)
    role = url.split("://", 1)[1].split("@", 1)[0]
    assert proxy.sql("SELECT current_user, count(*) FROM routes") == [[role, 1]]
    # the database itself refuses this role's writes, read-only transaction or not
    with psycopg.connect(url, autocommit=True) as con, pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        con.execute(b"DELETE FROM routes")
    # and what a READ ONLY transaction allows the store's own role (ending the sessions of
    # the role that writes: every replica's connections), the database refuses this role, even
    # past tuneloop's own name check
    kill = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = 'tuneloop' AND pid <> pg_backend_pid()")
    assert post_sql(proxy, kill).status_code == 403
    with psycopg.connect(url, autocommit=True) as con, pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        con.execute(kill.encode())
    assert proxy.sql("SELECT count(*) FROM routes") == [[1]]
    proxy.admin().put_routes({}, force=True)  # the store's connections are alive


def test_sql_db_needs_a_postgres_store(tmp_path: Any) -> None:
    from pydantic import ValidationError

    from tuneloop.config import Settings

    with pytest.raises(ValidationError, match="sql_db"):
        Settings(db=tmp_path / "x.duckdb", sql_db="postgresql://r@h/d")
    with pytest.raises(ValidationError, match="postgresql://"):
        Settings(db="postgresql://u@h/d", sql_db="mysql://r@h/d")


@on_postgres
def test_cli_reads_postgres_directly_when_no_server_runs(store: str, tmp_path: Any,
                                                         proxy: ProxyServer) -> None:
    proxy.admin().put_routes(ROUTE)
    result = CliRunner().invoke(
        main, ["--db", store, "sql", "SELECT alias FROM routes WHERE alias LIKE 'sup%'",
               "--api", "http://127.0.0.1:9", "-o", "json"],
        env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_STATE_DIR": str(tmp_path)},
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "support" in result.stdout
    assert "reading postgresql://tuneloop@" in " ".join(result.output.split())
    refused = CliRunner().invoke(
        main, ["--db", store, "sql", "DELETE FROM routes", "--api", "http://127.0.0.1:9"],
        env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_STATE_DIR": str(tmp_path)})
    assert refused.exit_code != 0
    assert proxy.sql("SELECT count(*) FROM routes") == [[1]]



@on_postgres
@pytest.mark.parametrize("sql", [
    "SELECT * FROM forgotten_users",
    'SELECT * FROM public."forgotten_users"',
    "SELECT table_to_xml(('forgotten' || '_users')::regclass, true, false, '')",
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'forgotten' || '_users'",
])
def test_forgotten_users_hashes_are_not_readable(proxy: ProxyServer, sql: str) -> None:
    """The table keeps a hash of each forgotten user's name: hashing a guess would confirm
    that "alice@example.com" was forgotten, so no query reads it, by name or round about."""
    proxy.admin().forget("alice@example.com")
    answer = post_sql(proxy, sql)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "read_only"
