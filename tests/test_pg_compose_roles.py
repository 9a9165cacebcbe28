"""deploy/postgres-init.sh, the roles docker-compose's Postgres is initialised with, run for
real (with psql, as the image runs it) on the throwaway cluster: the replicas' role owns the
database and is no superuser, the SQL role reads and may do nothing else, and a proxy on them
serves `tuneloop sql` as the reader."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import REVIEWER_TOKEN
from tests.pg_cluster import PgCluster

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy/postgres-init.sh"


@pytest.fixture
def initialised(pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:
    """A database made the way the image makes POSTGRES_DB (owned by the superuser), then the
    init script with roles of this test's own; the store's and the SQL role's URLs."""
    dbname = f"compose_{secrets.token_hex(4)}"
    owner, reader = f"tl_owner_{secrets.token_hex(3)}", f"tl_sql_{secrets.token_hex(3)}"
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}" TEMPLATE template0'.encode())
    env = {**os.environ, "PGHOST": pg_cluster.host, "PGPORT": str(pg_cluster.port),
           "POSTGRES_USER": "postgres", "POSTGRES_DB": dbname, "TUNELOOP_PG_ROLE": owner,
           "TUNELOOP_PG_SQL_ROLE": reader, "TUNELOOP_PG_PASSWORD": "not-checked-by-trust"}
    try:
        done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=60, cwd="/")
        assert done.returncode == 0, done.stderr
        yield pg_cluster.url(dbname, owner), pg_cluster.url(dbname, reader)
    finally:
        pg_cluster.drop_database(dbname)
        with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
            for role in (reader, owner):
                admin.execute(f'DROP ROLE IF EXISTS "{role}"'.encode())


def test_the_script_refuses_an_empty_password(pg_cluster: PgCluster) -> None:
    env = {**os.environ, "PGHOST": pg_cluster.host, "PGPORT": str(pg_cluster.port),
           "TUNELOOP_PG_PASSWORD": ""}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "TUNELOOP_PG_PASSWORD" in done.stderr


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_compose_roles_serve_the_store_and_read_only_sql(
        initialised: tuple[str, str], proxy_factory: Any) -> None:
    store_url, sql_url = initialised
    for url in (store_url, sql_url):
        with psycopg.connect(url, autocommit=True) as con:
            row = con.execute("SELECT rolsuper, rolreplication, rolcreaterole, rolcreatedb "
                              "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False, False, False, False)
    proxy = proxy_factory(db=store_url, sql_db=sql_url)  # migrates: the owner creates tables
    proxy.admin().put_routes({"support": {"targets": [{"model": "gpt-4o-mini"}]}})
    answer = httpx.post(f"{proxy.url}/admin/sql", timeout=60,
                        headers={"authorization": f"Bearer {REVIEWER_TOKEN}"},
                        json={"sql": "SELECT current_user, count(*) FROM routes"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [[sql_url.rsplit("@", 1)[0].rsplit("/", 1)[1], 1]]
    with psycopg.connect(sql_url, autocommit=True) as con:
        # tables made after the script ran (by migrations) are readable, never writable
        assert con.execute("SELECT count(*) FROM interactions").fetchone() == (0,)
        for write in ("DELETE FROM routes", "CREATE TABLE mallory (a int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute(write.encode())
        # its sorts spill early and its temporary files stop at 1GB, which it can't raise
        assert con.execute("SELECT current_setting('work_mem'), "
                           "current_setting('temp_file_limit')").fetchone() == ("4MB", "1GB")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute("SET temp_file_limit = -1")
