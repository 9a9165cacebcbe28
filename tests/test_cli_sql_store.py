"""`tuneloop sql --db STORE` without --api reads STORE itself: a server that happens to listen
on the default address (127.0.0.1:4000) may serve another store, and used to answer for it,
with nothing on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from proxy.app import create_app
from storage.routes import replace_routes
from storage.store import migrate_store, open_store
from tests.conftest import ADMIN_TOKEN, FakeUpstream, proxy_settings
from tests.fakes.server import serve_app
from tuneloop.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_API_PORT = 4000
ROUTE = {"targets": [{"model": "gpt-4o-mini"}]}


@pytest.fixture
def server_on_the_default_address(tmp_path: Path, fake_openai: FakeUpstream) -> Iterator[Path]:
    """A tuneloop server with one route, on 127.0.0.1:4000 when that is free (when it is not,
    say taken by this fixture in another xdist worker, whatever listens there plays its part
    and the server listens on another port); the DuckDB file it holds."""
    settings = proxy_settings(tmp_path / "other", fake_openai.base_url)
    app = create_app(settings)
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(serve_app(app, port=DEFAULT_API_PORT))
        except OSError:
            url = stack.enter_context(serve_app(app))
        httpx.put(f"{url}/admin/routes", json={"other": ROUTE}, timeout=30,
                  headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).raise_for_status()
        assert isinstance(settings.db, Path) and settings.db.exists()
        yield settings.db


def run_sql(tmp_path: Path, db: str, query: str) -> Result:
    env: dict[str, Any] = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": None,
                           "TUNELOOP_DB": None, "TUNELOOP_SQL_DB": None,
                           "TUNELOOP_STATE_DIR": str(tmp_path / "cli-state")}
    return CliRunner().invoke(main, ["--db", db, "sql", "-o", "json", query], env=env)


def make_store(db: str, aliases: list[str]) -> None:
    store = open_store(db)
    try:
        migrate_store(store)
        store.write_sync(lambda con: replace_routes(
            con, {alias: ROUTE for alias in aliases}, "test"))
    finally:
        store.close()


def rows(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return [list(row.values()) for row in json.loads(result.stdout)]


@pytest.mark.parametrize("store", ["duckdb", "postgres"], indirect=True)
def test_the_named_store_answers_not_a_server_nobody_named(
        server_on_the_default_address: Path, store: str, tmp_path: Path) -> None:
    make_store(store, ["mine", "also-mine"])
    result = run_sql(tmp_path, store, "SELECT alias FROM routes ORDER BY alias")
    assert rows(result) == [["also-mine"], ["mine"]]
    said = " ".join(result.stderr.split())
    assert "directly" in said and (store.split("@")[-1] if "://" in store else "") in said


def test_a_named_file_held_by_a_server_names_the_way_to_ask_it(
        server_on_the_default_address: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items()
           if key not in ("TUNELOOP_API", "TUNELOOP_DB", "TUNELOOP_SQL_DB")}
    done = subprocess.run(  # another process, as DuckDB sees a server's file held
        [sys.executable, "-m", "tuneloop.cli", "--db", str(server_on_the_default_address),
         "sql", "SELECT 1"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
             "TUNELOOP_STATE_DIR": str(tmp_path / "cli-state")})
    assert done.returncode == 7, (done.stdout, done.stderr)
    said = " ".join(done.stderr.split())
    assert "held by another process" in said and "--api http://HOST:PORT" in said


def test_a_named_file_that_does_not_exist_is_said(server_on_the_default_address: Path,
                                                   tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.duckdb"
    result = run_sql(tmp_path, str(missing), "SELECT 1")
    assert result.exit_code != 0
    assert "no database file at" in " ".join(result.output.split())
    assert not missing.exists()
