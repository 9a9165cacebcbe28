"""The Postgres store itself: migrations (from the first schema, and by many replicas at once),
the connection adapter's SQL translation and transactions, and the settings that choose it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy.auth import ensure_admin_token
from storage.backend.pg_connection import PgConnection, to_pyformat
from storage.backend.pg_database import PgDatabase
from storage.migrations import MIGRATIONS, Migration
from storage.store import migrate_store, open_store
from tuneloop.config import Settings
from tuneloop.errors import ConfigError, StorageError

ALL = [m.version for m in MIGRATIONS]


def _chat_row(con: PgConnection, id_: str, answer: str | None) -> None:
    response = ('{"choices": [{"message": {"role": "assistant", "content": '
                + ("null" if answer is None else f'"{answer}"') + "}}]}")
    con.execute(
        "INSERT INTO interactions (id, created_at, endpoint, traffic, request, response, "
        "status_code) VALUES (?, now(), 'chat.completions', 'production', ?, ?, 200)",
        [id_, '{"messages": [{"role": "user", "content": "hello there"}]}', response])


def test_migrations_upgrade_from_the_first_schema_with_rows_in_it(pg_url: str) -> None:
    db = PgDatabase(pg_url, read_threads=1)
    try:
        assert migrate_store(db, up_to=1) == [1]
        db.write_sync(lambda con: (_chat_row(con, "old-answered", "hi!"),
                                   _chat_row(con, "old-empty", None)))
        assert migrate_store(db) == [v for v in ALL if v > 1]
        assert migrate_store(db) == []
        rows = db.read_sync(lambda con: con.execute(
            "SELECT interaction_id, reason FROM untrainable").fetchall())
        assert rows == [("old-empty", "no_answer")]  # migration 32's backfill ran on Postgres
        indexed = db.read_sync(lambda con: con.execute(
            "SELECT count(*) FROM search_docs").fetchall())
        assert indexed == [(2,)]  # and migration 35's
        versions = db.read_sync(lambda con: con.execute(
            "SELECT version FROM _migrations ORDER BY 1").fetchall())
        assert [v for (v,) in versions] == ALL
    finally:
        db.close()


def test_replicas_starting_together_migrate_exactly_once(pg_url: str) -> None:
    stores = [PgDatabase(pg_url, read_threads=1) for _ in range(4)]
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def boot(db: PgDatabase) -> None:
        start.wait()
        try:
            applied.append(migrate_store(db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(db,)) for db in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert sorted(applied, key=len) == [[], [], [], ALL]  # one migrated, three found it done
        counts = stores[0].read_sync(lambda con: con.execute(
            "SELECT version, count(*) FROM _migrations GROUP BY version ORDER BY 1").fetchall())
        assert counts == [(v, 1) for v in ALL]
    finally:
        for db in stores:
            db.close()


def test_a_failing_migration_leaves_no_trace_on_postgres(pg_url: str) -> None:
    def broken(con: Any) -> None:
        con.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    db = PgDatabase(pg_url, read_threads=1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            migrate_store(db, migrations=(*MIGRATIONS, Migration(999, "broken", broken)))
        left = db.read_sync(lambda con: con.execute(
            "SELECT to_regclass('half_done') IS NULL, max(version) FROM _migrations").fetchall())
        assert left == [(True, ALL[-1])]
    finally:
        db.close()


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT ? AS a", "SELECT %s AS a"),
    ("SELECT '?' , ?", "SELECT '?' , %s"),
    ("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || %s"),
    ("SELECT \"odd?name\" FROM t WHERE x LIKE 'a%' AND y = ?",
     "SELECT \"odd?name\" FROM t WHERE x LIKE 'a%%' AND y = %s"),
    ("SELECT 5 % 2, ? -- what? 100%\n", "SELECT 5 %% 2, %s -- what? 100%%\n"),
])
def test_placeholders_become_psycopg_ones_outside_quotes_and_comments(
    sql: str, expected: str
) -> None:
    assert to_pyformat(sql) == expected


def test_the_translated_sql_runs_with_question_marks_and_percents(pg_url: str) -> None:
    db = PgDatabase(pg_url, read_threads=1)
    try:
        got = db.read_sync(lambda con: con.execute(
            "SELECT ?, '?' || ?, 'a%b' LIKE 'a%', 7 % 4", ["x", "y"]).fetchall())
        assert got == [("x", "?y", True, 3)]
    finally:
        db.close()


def test_nested_transactions_in_a_write_are_savepoints(pg_url: str) -> None:
    db = PgDatabase(pg_url, read_threads=1)

    def work(con: PgConnection) -> None:
        con.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        con.execute("INSERT INTO t VALUES (1)")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("INSERT INTO t VALUES (1)")  # a duplicate: this part fails
            con.execute("COMMIT")
        except psycopg.errors.UniqueViolation:
            con.execute("ROLLBACK")
        con.execute("INSERT INTO t VALUES (2)")  # the outer transaction is still usable

    try:
        db.write_sync(work)
        assert db.read_sync(lambda con: con.execute(
            "SELECT x FROM t ORDER BY x").fetchall()) == [(1,), (2,)]

        def fails(con: PgConnection) -> None:
            con.execute("INSERT INTO t VALUES (3)")
            raise RuntimeError("after a write")

        with pytest.raises(RuntimeError):
            db.write_sync(fails)
        assert db.read_sync(lambda con: con.execute(  # the whole write rolled back
            "SELECT count(*) FROM t WHERE x = 3").fetchall()) == [(0,)]
    finally:
        db.close()


def test_an_unreachable_postgres_is_a_clear_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot connect to postgresql://tl@127\.0\.0\.1:9/"
                                           r"nowhere") as caught:
        PgDatabase("postgresql://tl:s3cret@127.0.0.1:9/nowhere", connect_timeout_s=1.0)
    assert "s3cret" not in str(caught.value)


def test_settings_take_a_path_or_a_postgres_url(tmp_path: Path) -> None:
    by_path = Settings(db=str(tmp_path / "x.duckdb"), state_dir=tmp_path / "state")
    assert by_path.db == tmp_path / "x.duckdb" and not by_path.db_is_postgres
    assert by_path.spool_path == tmp_path / "x.duckdb.spool"
    url = "postgresql://tuneloop:pw@db.internal:5432/tuneloop"
    by_url = Settings(db=url, state_dir=tmp_path / "state")
    assert by_url.db == url and by_url.db_is_postgres and by_url.db_file is None
    assert by_url.db_label == "postgresql://tuneloop@db.internal:5432/tuneloop"
    in_query = Settings(db="postgresql://tl@db/tl?password=hunter2&sslmode=require")
    assert in_query.db_label == "postgresql://tl@db/tl"  # a password in the query is one too
    assert by_url.spool_path == tmp_path / "state" / "tuneloop.spool"
    assert by_url.admin_token_file == tmp_path / "state" / "tuneloop.admin-token"
    with pytest.raises(ConfigError, match="postgresql:// URL"):
        from tuneloop.config import load_settings
        load_settings(db="mysql://root@db/x")


def test_a_postgres_store_needs_the_shared_admin_token(tmp_path: Path) -> None:
    settings = Settings(db="postgresql://tuneloop@db/tuneloop", state_dir=tmp_path)
    with pytest.raises(ConfigError, match="TUNELOOP_ADMIN_TOKEN"):
        ensure_admin_token(settings)
    assert not list(tmp_path.iterdir())  # no per-machine token was written


def test_open_store_picks_the_backend(tmp_path: Path, pg_url: str) -> None:
    closers: list[Callable[[], None]] = []
    try:
        duck = open_store(tmp_path / "a.duckdb")
        closers.append(duck.close)
        pg = open_store(pg_url)
        closers.append(pg.close)
        assert (duck.dialect, pg.dialect) == ("duckdb", "postgres")
    finally:
        for close in closers:
            close()


def test_replicas_share_the_pseudonym_key_from_settings(tmp_path: Path) -> None:
    from proxy.redaction import redactor_for

    url = "postgresql://tuneloop@db/tuneloop"
    with pytest.raises(ConfigError, match="TUNELOOP_REDACTION_KEY"):
        redactor_for(Settings(db=url, state_dir=tmp_path, redact=["email"]))
    key = "ab" * 32
    one = redactor_for(Settings(db=url, state_dir=tmp_path / "a", redact=["email"],
                                redaction_key=key))
    two = redactor_for(Settings(db=url, state_dir=tmp_path / "b", redact=["email"],
                                redaction_key=key))
    alice = "alice@example.com"
    assert one.identity(alice) == two.identity(alice) != alice
    with pytest.raises(ConfigError, match="64 hex digits"):
        redactor_for(Settings(db=url, state_dir=tmp_path, redact=["email"], redaction_key="xy"))
    assert not list(tmp_path.iterdir())  # no per-machine key file
