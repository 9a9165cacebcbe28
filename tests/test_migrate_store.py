"""`tuneloop migrate-store`: a store filled through a real proxy is copied DuckDB → Postgres →
DuckDB; a proxy on each copy answers the admin API as the original did; a copy killed mid-way
(SIGKILL) resumes to exactly the source's rows; wrong destinations and specs are refused."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from click.testing import CliRunner, Result

from storage.db import Database
from storage.store import migrate_store, open_store
from storage.transfer import SEQUENCES, TABLE_ORDER, Transfer
from storage.transfer_stores import label, transfer_stores
from tests.conftest import FakeUpstream, ProxyServer, running_proxy
from tuneloop.cli import main

ROOT = Path(__file__).resolve().parent.parent
N_CHATS = 12


def fill(server: ProxyServer) -> None:
    """Traffic, reviews, tags, routes and a key through the real proxy and admin API."""
    client = server.openai()
    for n in range(N_CHATS):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "You answer tersely."},
                      {"role": "user", "content": f"question {n}: what is Zürich's 東京 {n}?"}],
            metadata={"n": str(n)}, store=True)
    server.wait_logged(N_CHATS)
    admin = server.admin()
    ids = [item["id"] for item in admin.interactions(limit=100)["items"]]
    assert len(ids) == N_CHATS
    admin.review(ids[0], "approve", reviewer="ann", expected_revision=0)
    admin.review(ids[1], "reject", reviewer="bob", expected_revision=0, reason="wrong")
    edited = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "edited"}]
    admin.review(ids[2], "edit", reviewer="ann", expected_revision=0, messages=edited)
    admin.tag(ids[3], reviewer="ann", add=["golden", "billing"])
    admin.put_routes({"support": {"targets": [{"model": "gpt-4o-mini"}]}})
    admin.put_routes({"support": {"targets": [{"model": "gpt-4o"}]}},
                     expect_seq=admin.routes_with_seq()["seq"])
    admin.create_key("billing-app")


def snapshot(server: ProxyServer) -> dict[str, Any]:
    """What the admin API answers about the store."""
    admin = server.admin()
    items = admin.interactions(limit=100)["items"]
    return {
        "items": items,
        "details": [admin.interaction(item["id"]) for item in items],
        "routes": admin.routes(),
        "history": admin.route_history(),
        "search": admin.search("Zürich")["items"],
        "search_cjk": admin.search("東京")["items"],
        "approved": admin.interactions(state="approved")["items"],
    }


@pytest.fixture
def source_store(tmp_path: Path, fake_openai: FakeUpstream) -> tuple[str, dict[str, Any]]:
    """A DuckDB store filled through a real proxy (stopped), and its admin-API snapshot."""
    db = str(tmp_path / "source.duckdb")
    with running_proxy(tmp_path, fake_openai, db=db) as server:
        fill(server)
        before = snapshot(server)
    return db, before


def migrate(*args: str) -> Result:
    return CliRunner().invoke(main, ["migrate-store", *args])


def flat(text: str) -> str:
    """`text` without whitespace: rich wraps a long path anywhere, even inside a word."""
    return "".join(text.split())


def table_rows(spec: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted, as plain values (for exact comparison across backends)."""
    db = open_store(spec)
    try:
        def read(con: Any) -> dict[str, list[tuple[Any, ...]]]:
            from storage.transfer_read import read_batches, table_spec, user_tables
            out = {}
            for name in user_tables(con):
                spec_ = table_spec(con, name)
                rows = [tuple(r.values()) for b in read_batches(con, spec_, batch_rows=1000,
                                                                ordered=False)
                        for r in b.to_pylist()]
                out[name] = sorted(rows, key=repr)
            return out
        return db.read_sync(read)
    finally:
        db.close()


def test_duckdb_to_postgres_and_back_serves_the_same(
        source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path,
        fake_openai: FakeUpstream) -> None:
    source, before = source_store
    result = migrate("--from", source, "--to", pg_url, "--batch-rows", "5")
    assert result.exit_code == 0, result.output
    assert "verified: every source row is in the destination" in result.output
    assert "rows/s" in result.output
    with psycopg.connect(pg_url) as con:  # the planner has statistics; search its tsvector
        assert con.execute("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN "
                           "('interactions', 'search_docs') AND last_analyze IS NOT NULL"
                           ).fetchall() == [(2,)]
        assert con.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                           "to_regclass('search_docs_lexemes')").fetchall() == [(True,)]
        assert con.execute("SELECT count(*) FROM search_docs WHERE lexemes IS NULL"
                           ).fetchall() == [(0,)]
    with running_proxy(tmp_path, fake_openai, db=pg_url) as server:
        assert snapshot(server) == before
        # the copied sequence continues after the copied route history
        server.admin().put_routes({"support": {"targets": [{"model": "gpt-4.1"}]}},
                                  expect_seq=server.admin().routes_with_seq()["seq"])
        on_pg = snapshot(server)
        seqs = [h["seq"] for h in on_pg["history"]]
        assert len(set(seqs)) == len(seqs) == len(before["history"]) + 1
    back = str(tmp_path / "back.duckdb")
    result = migrate("--from", pg_url, "--to", back, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert table_rows(back) == table_rows(pg_url)
    with running_proxy(tmp_path, fake_openai, db=back) as server:
        assert snapshot(server) == on_pg


def test_a_replica_already_serving_the_destination_takes_the_copied_routes(
        source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path,
        fake_openai: FakeUpstream) -> None:
    """`tuneloop serve` may start on the empty Postgres before the copy (the issue's order):
    it routes with the copied table at once, not only at its next periodic reload."""
    source, _ = source_store
    with running_proxy(tmp_path, fake_openai, db=pg_url, shared_reload_s=600) as server:
        client = server.openai()

        def aliases() -> set[str]:  # the replica's routing table (GET /v1/models: not logged)
            return {m.id for m in client.models.list()} & {"support"}

        assert aliases() == set()
        result = migrate("--from", source, "--to", pg_url, "-q")
        assert result.exit_code == 0, result.output
        deadline = time.monotonic() + 1.0
        while aliases() != {"support"}:
            assert time.monotonic() < deadline, "the replica kept its old routes"
            time.sleep(0.02)
        server.close()


def test_the_transfer_lock_is_no_other_advisory_lock() -> None:
    from storage.backend.pg_database import MIGRATE_LOCK, WRITE_LOCK
    from storage.notify import LEADER_LOCK
    from storage.transfer_stores import TRANSFER_LOCK
    assert len({WRITE_LOCK, MIGRATE_LOCK, LEADER_LOCK, TRANSFER_LOCK}) == 4


def test_every_table_and_sequence_has_a_place() -> None:
    """A new table gets a deliberate place in the copy order; a new sequence, its column."""
    schema = (ROOT / "storage" / "schema.sql").read_text()
    tables = {line.split()[2] for line in schema.splitlines()
              if line.startswith("CREATE TABLE ")} - {"_migrations"}
    sequences = {line.split()[2] for line in schema.splitlines()
                 if line.startswith("CREATE SEQUENCE ")}
    assert tables == set(TABLE_ORDER)
    assert sequences == set(SEQUENCES)


def test_killed_copy_resumes_to_exactly_the_source(
        source_store: tuple[str, dict[str, Any]], pg_url: str) -> None:
    """A copy killed with SIGKILL mid-way, then run again: every table holds exactly the
    source's rows (search_terms, which has no key, included)."""
    source, _ = source_store
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "migrate-store", "--from", source, "--to",
         pg_url, "--batch-rows", "1", "--quiet"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = _wait_for_progress(pg_url, lambda n: n >= 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with psycopg.connect(pg_url) as con:
        copied = con.execute("SELECT sum(rows_done), sum(source_rows) "
                             "FROM _store_transfer").fetchone()
        assert copied is not None and done <= copied[0] < copied[1]  # really mid-way
    result = migrate("--from", source, "--to", pg_url, "--batch-rows", "7")
    assert result.exit_code == 0, result.output
    assert "resuming:" in result.output and "verified" in result.output
    assert table_rows(pg_url) == table_rows(source)


def _wait_for_progress(url: str, enough: Callable[[int], bool],
                       proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with contextlib.suppress(psycopg.Error), psycopg.connect(url) as con:
            row = con.execute("SELECT sum(rows_done) FROM _store_transfer").fetchone()
            if row and row[0] is not None and enough(int(row[0])):
                return int(row[0])
        time.sleep(0.01)
    raise AssertionError("the copy made no progress")


def test_interrupted_in_process_resumes_without_duplicates(
        source_store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """DuckDB → DuckDB, stopped by an error after some batches (the batch in flight is rolled
    back with its count), then resumed: exactly the source's rows."""
    source, _ = source_store
    dest = str(tmp_path / "copy.duckdb")
    calls = 0

    class Stop(Exception):
        pass

    def stop_after(table: str, done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if table == "search_terms" and done > 3:
            raise Stop

    with transfer_stores(source, dest) as (src, dst):
        transfer = Transfer(src, dst, source_label=label(source), batch_rows=2)
        plan = transfer.prepare()
        with pytest.raises(Stop):
            transfer.copy(plan, stop_after)
    with transfer_stores(source, dest) as (src, dst):
        transfer = Transfer(src, dst, source_label=label(source), batch_rows=3)
        plan = transfer.prepare()
        assert 0 < sum(t.rows_done for t in plan) < sum(t.source_rows for t in plan)
        transfer.copy(plan)
        assert all(check.ok for check in transfer.verify(plan))
    assert table_rows(dest) == table_rows(source)


def test_refuses_a_destination_with_other_data(
        source_store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    source, _ = source_store
    other = tmp_path / "other.duckdb"
    db = Database(other)
    migrate_store(db)
    db.write_sync(lambda con: con.execute(
        "INSERT INTO routes VALUES ('mine', '{}', now(), 'me')"))
    db.close()
    result = migrate("--from", source, "--to", str(other))
    assert result.exit_code == 5, result.output
    assert "already holds data: routes (1 rows)" in result.output
    # a finished copy of one store is not a place to copy another into
    first = tmp_path / "first.duckdb"
    assert migrate("--from", source, "--to", str(first), "-q").exit_code == 0
    second_source = tmp_path / "second.duckdb"
    db = Database(second_source)
    migrate_store(db)
    db.close()
    result = migrate("--from", str(second_source), "--to", str(first))
    assert result.exit_code == 5, result.output
    assert flat(f"holds a copy (finished or not) of {label(source)}") in flat(result.output)


def test_a_source_changed_before_any_row_was_copied_is_copied_as_it_is_now(
        source_store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """Only rows already copied must stay as they were (tests/test_migrate_store_rows.py)."""
    source, _ = source_store
    dest = str(tmp_path / "copy.duckdb")
    with transfer_stores(source, dest) as (src, dst):
        Transfer(src, dst, source_label=label(source)).prepare()
    con = duckdb.connect(source)
    con.execute("INSERT INTO routes VALUES ('late', '{}', now(), 'me')")
    con.close()
    result = migrate("--from", source, "--to", dest)
    assert result.exit_code == 0, result.output
    assert table_rows(dest) == table_rows(source)


@pytest.mark.parametrize("args, message", [
    (["--from", "{tmp}/missing.duckdb", "--to", "{tmp}/x.duckdb"], "no DuckDB store at"),
    (["--from", "{src}", "--to", "{src}"], "name the same store"),
    (["--from", "{src}", "--to", "postgresql://nobody@127.0.0.1:1/none"],
     "cannot connect to postgresql://nobody@127.0.0.1:1/none"),
    (["--from", "{src}", "--to", "postgresql://u:secret@127.0.0.1:notaport/db"],
     "cannot connect to"),
    (["--from", "{src}", "--to", "{tmp}"], "is a directory"),
])
def test_bad_specs_are_clear_errors(source_store: tuple[str, dict[str, Any]], tmp_path: Path,
                                    args: list[str], message: str) -> None:
    source, _ = source_store
    result = migrate(*(a.format(tmp=tmp_path, src=source) for a in args))
    assert result.exit_code in (2, 7), result.output
    assert message in " ".join(result.output.split())
    assert "secret" not in result.output and "Traceback" not in result.output


def test_refuses_a_source_a_server_holds(source_store: tuple[str, dict[str, Any]],
                                         tmp_path: Path) -> None:
    """DuckDB lets one process open a file read-write: the source's holder must stop first."""
    source, _ = source_store
    held = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('open', flush=True); time.sleep(60)", source],
        stdout=subprocess.PIPE)
    try:
        assert held.stdout is not None and held.stdout.readline() == b"open\n"
        result = migrate("--from", source, "--to", str(tmp_path / "copy.duckdb"))
        assert result.exit_code == 7, result.output
        assert "Is another tuneloop server running on it?" in " ".join(result.output.split())
    finally:
        held.kill()
        held.wait()
