"""The test Postgres itself (tests/pg_cluster.py and the store fixtures), checked with psycopg."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import both_stores
from tests.pg_cluster import ROLE, PgCluster, PgClusterError, find_bindir

ROOT = Path(__file__).resolve().parent.parent


def _databases(cluster: PgCluster) -> set[str]:
    with psycopg.connect(cluster.admin_url()) as con:
        rows = con.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
        return {name for (name,) in rows}


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s: {what}")
        time.sleep(0.05)


def test_the_cluster_answers_as_the_tuneloop_role(pg_url: str) -> None:
    with psycopg.connect(pg_url) as con:
        user, superuser, version, encoding = con.execute(
            "SELECT current_user, current_setting('is_superuser'),"
            " current_setting('server_version_num')::int, pg_encoding_to_char(encoding)"
            " FROM pg_database WHERE datname = current_database()"
        ).fetchone() or (None, None, 0, None)
        assert (user, superuser, encoding) == (ROLE, "off", "UTF8")
        assert version >= 130000
        # what the product needs in its own database, without superuser rights
        con.execute("CREATE TABLE t (id text PRIMARY KEY, body text)")
        con.execute("CREATE EXTENSION pg_trgm")
        con.execute("INSERT INTO t VALUES ('a', '日本語のテキスト') ON CONFLICT DO NOTHING")
        assert con.execute("SELECT similarity(body, '日本語') > 0 FROM t").fetchone() == (True,)


def test_the_unix_socket_answers_too(pg_cluster: PgCluster, pg_url: str) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(host=str(pg_cluster.socket_dir), port=pg_cluster.port,
                         user=ROLE, dbname=dbname) as con:
        assert con.execute("SELECT current_database()").fetchone() == (dbname,)


def test_two_databases_are_isolated(pg_url_factory: Callable[[], str]) -> None:
    first, second = pg_url_factory(), pg_url_factory()
    assert first != second
    with psycopg.connect(first) as con:
        con.execute("CREATE TABLE only_here (x int)")
    with psycopg.connect(second) as con:
        assert con.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
        assert con.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_a_database_is_dropped_even_with_a_connection_left_open(pg_cluster: PgCluster) -> None:
    with pg_cluster.database() as url:
        name = url.rsplit("/", 1)[1]
        left_open = psycopg.connect(url)  # a pool the test forgot to close
        assert name in _databases(pg_cluster)
    assert name not in _databases(pg_cluster)
    with pytest.raises(psycopg.OperationalError):
        left_open.execute("SELECT 1")
    left_open.close()


def test_earlier_tests_databases_are_gone(pg_cluster: PgCluster, pg_url: str) -> None:
    """Tests above (in any order) each made databases; only this test's one is left."""
    assert _databases(pg_cluster) == {pg_url.rsplit("/", 1)[1]}


def test_store_defaults_to_a_duckdb_file(store: str, tmp_path: Path) -> None:
    assert store == str(tmp_path / "tuneloop.duckdb")


@both_stores
def test_both_stores(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if request.node.callspec.params["store"] == "duckdb":
        assert store == str(tmp_path / "tuneloop.duckdb")
        return
    assert store.startswith("postgresql://tuneloop@127.0.0.1:")
    with psycopg.connect(store) as con:
        assert con.execute("SELECT count(*) FROM pg_class WHERE relnamespace ="
                           " 'public'::regnamespace").fetchone() == (0,)


def test_proxy_settings_takes_the_store(store: str, pg_url: str, tmp_path: Path) -> None:
    from tests.conftest import proxy_settings

    assert str(proxy_settings(tmp_path, "http://127.0.0.1:9/v1").db) == store
    # a Postgres store's local files stay in tmp_path, not in a path made from the URL
    settings = proxy_settings(tmp_path, "http://127.0.0.1:9/v1", db=pg_url)
    assert settings.db == pg_url
    for local in (settings.spool_path, settings.admin_token_file, settings.ui_secret_file,
                  settings.exports_root):
        assert local.is_relative_to(tmp_path), local


def test_the_cluster_starts_only_for_tests_that_ask(tmp_path: Path) -> None:
    """A DuckDB-only test doesn't start Postgres; a Postgres-store test does (in a child
    pytest run, so this session's cluster doesn't count)."""

    def setups(test: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--setup-show",
             f"--basetemp={tmp_path / test}", f"tests/test_pg_cluster.py::{test}"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "SETUP    S pg_cluster" not in setups("test_store_defaults_to_a_duckdb_file")
    assert "SETUP    S pg_cluster" in setups("test_both_stores[postgres]")


CHILD = """
import os, sys, time
from tests.pg_cluster import PgCluster
cluster = PgCluster.start()
with cluster.database() as url:
    pass
print(cluster.root, (cluster.data_dir / "postmaster.pid").read_text().split()[0], flush=True)
if sys.argv[1] == "hang":
    time.sleep(600)
"""


@pytest.mark.parametrize("ending", ["kill -9", "exit without stop()"])
def test_nothing_is_left_behind(ending: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "hang" if ending == "kill -9" else "exit"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert len(line) == 2, f"the child printed {line!r}"
    root, pid = Path(line[0]), int(line[1])
    assert root.is_dir() and not _gone(pid)
    if ending == "kill -9":
        child.kill()
    child.wait(60)
    _wait_until(lambda: _gone(pid), f"postgres {pid} still runs")
    _wait_until(lambda: not root.exists(), f"{root} still exists")


def test_missing_postgres_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PgClusterError, match=r"apt-get install postgresql"):
        find_bindir(globs=[str(tmp_path / "*" / "bin")], path=str(tmp_path))


def test_a_failed_command_is_named_with_its_output(tmp_path: Path) -> None:
    from tests.pg_cluster import _run

    script = "import sys; print('initdb: boom'); sys.exit(3)"
    with pytest.raises(PgClusterError, match=r"(?s)exited with 3.*initdb: boom"):
        _run([sys.executable, "-c", script])
