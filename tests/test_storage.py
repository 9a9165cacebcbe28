"""Storage on real DuckDB files: migrations, the spool, ingest, read-only SQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from storage.db import Database, connect
from storage.migrations import MIGRATIONS, Migration, migrate
from storage.records import encode_record
from storage.spool import Spool
from storage.sql import run_read_only
from storage.writer import LogWriter
from tuneloop.errors import BadRequest, Forbidden, StorageError


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"0190-{n:08d}",
        "created_at": 1_700_000_000_000_000 + n,
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "traffic": "production",
        "request": '{"model": "gpt-4o-mini", "messages": []}',
        "response": '{"choices": []}',
        "status_code": 200,
        "finish": "completed",
        "stream": False,
        "tags": ["a"],
        **extra,
    }


def test_migrations_upgrade_from_the_first_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = connect(path)
    assert migrate(con, up_to=1) == [1]
    con.execute(
        "INSERT INTO interactions (id, created_at, endpoint, traffic) "
        "VALUES ('old-1', now(), 'chat.completions', 'production')"
    )
    con.close()

    con = connect(path)
    applied = migrate(con)
    assert applied == [m.version for m in MIGRATIONS if m.version > 1]
    assert con.execute("SELECT id FROM interactions").fetchall() == [("old-1",)]
    versions = [r[0] for r in con.execute("SELECT version FROM _migrations ORDER BY 1").fetchall()]
    assert versions == [m.version for m in MIGRATIONS]
    assert migrate(con) == []  # idempotent
    con.close()


def test_a_failing_migration_leaves_no_trace(tmp_path: Path) -> None:
    def broken(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    con = connect(tmp_path / "db.duckdb")
    with pytest.raises(RuntimeError):
        migrate(con, migrations=(*MIGRATIONS, Migration(999, "broken", broken)))
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert "half_done" not in tables
    assert 999 not in {r[0] for r in con.execute("SELECT version FROM _migrations").fetchall()}
    con.close()


def test_spool_survives_a_crash_and_replays_without_duplicates(tmp_path: Path) -> None:
    # a process appends and dies (no seal, no close) with an active file
    died = subprocess.run([sys.executable, "-c", (
        "import os, sys; from storage.spool import Spool; from storage.records import "
        "encode_record; from tests.test_storage import record\n"
        "spool = Spool(__import__('pathlib').Path(sys.argv[1]), max_bytes=10_000_000)\n"
        "for n in range(5): assert spool.append(encode_record(record(n)))\n"
        "os._exit(9)"), str(tmp_path / "spool")], cwd=Path(__file__).parent.parent,
        capture_output=True, text=True, check=False)
    assert died.returncode == 9, died.stderr
    reopened = Spool(tmp_path / "spool", max_bytes=10_000_000)
    assert len(reopened.sealed()) == 1

    async def ingest_twice() -> int:
        db = Database(tmp_path / "db.duckdb")
        db.write_sync(migrate)
        writer = LogWriter(db, reopened)
        first = await writer.ingest_pending()
        # the same records again (a replay after a crash between commit and unlink)
        for n in range(5):
            reopened.append(encode_record(record(n)))
        second = await writer.ingest_pending()
        count = db.write_sync(
            lambda c: c.execute("SELECT count(*) FROM interactions").fetchall()[0][0]
        )
        db.close()
        assert (first, second) == (5, 0)
        return int(count)

    assert asyncio.run(ingest_twice()) == 5
    assert reopened.size_bytes == 0


def test_a_spool_belongs_to_one_process(tmp_path: Path) -> None:
    """Two replicas given the same spool would append to and ingest the same files."""
    first = Spool(tmp_path / "spool", max_bytes=1_000_000)
    with pytest.raises(StorageError, match="in use by another tuneloop process"):
        Spool(tmp_path / "spool", max_bytes=1_000_000)
    first.close()
    Spool(tmp_path / "spool", max_bytes=1_000_000).close()  # free again once closed


def test_torn_last_line_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    good = encode_record(record(1)) + encode_record(record(2))
    (directory / "active-000000000000.jsonl").write_bytes(good + b'{"id": "torn", "crea')
    spool = Spool(directory, max_bytes=1_000_000)

    async def ingest() -> int:
        db = Database(tmp_path / "db.duckdb")
        db.write_sync(migrate)
        inserted = await LogWriter(db, spool).ingest_pending()
        db.close()
        return inserted

    assert asyncio.run(ingest()) == 2


def test_a_record_the_database_refuses_is_quarantined_not_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1_000_000)
    spool.append(encode_record(record(1)))
    spool.append(encode_record(record(2, request="{not json")))
    spool.append(encode_record(record(3)))

    async def ingest() -> int:
        db = Database(tmp_path / "db.duckdb")
        db.write_sync(migrate)
        inserted = await LogWriter(db, spool).ingest_pending()
        db.close()
        return inserted

    assert asyncio.run(ingest()) == 2
    quarantined = (tmp_path / "spool" / "quarantine.jsonl").read_text()
    assert "0190-00000002" in quarantined


def test_full_spool_drops_and_counts(tmp_path: Path) -> None:
    line = encode_record(record(1))
    spool = Spool(tmp_path / "spool", max_bytes=len(line) * 2)
    assert spool.append(line) and spool.append(line)
    assert not spool.append(line)
    assert spool.dropped == 1


def test_injected_storage_fault_keeps_records_in_the_spool(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(tmp_path / "db.duckdb")
        db.write_sync(migrate)
        writer = LogWriter(db, Spool(tmp_path / "spool", 1_000_000))
        writer.inject_failure(0.3)
        writer.log(record(1))
        with pytest.raises(Exception, match="injected"):
            await writer.ingest_pending()
        held = writer.spool.size_bytes
        time.sleep(0.35)
        inserted = await writer.ingest_pending()
        db.close()
        return held, inserted

    held, inserted = asyncio.run(scenario())
    assert held > 0 and inserted == 1


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("DELETE FROM interactions", Forbidden),
        ("INSERT INTO interactions (id) VALUES ('x')", Forbidden),
        ("ATTACH '/tmp/other.duckdb' AS other", Forbidden),
        ("COPY interactions TO '/tmp/out.csv'", Forbidden),
        ("SELECT * FROM read_csv('/etc/passwd')", Forbidden),
        ("SELECT * FROM read_text('/etc/hostname')", Forbidden),
        ("INSTALL httpfs", Forbidden),
        ("SELECT 1; DROP TABLE interactions", BadRequest),
        ("SELEC nonsense", BadRequest),
    ],
)
def test_read_only_sql_refuses_writes_and_file_access(
    tmp_path: Path, query: str, error: type[Exception]
) -> None:
    con = connect(tmp_path / "db.duckdb")
    migrate(con)
    with pytest.raises(error):
        run_read_only(con, query)
    assert con.execute("SELECT count(*) FROM _migrations").fetchall()[0][0] == len(MIGRATIONS)
    con.close()


def test_read_only_sql_answers_selects(tmp_path: Path) -> None:
    con = connect(tmp_path / "db.duckdb")
    migrate(con)
    result = run_read_only(con, "SELECT 1 AS one, now() AS t, [1, 2] AS l")
    assert result["columns"] == ["one", "t", "l"]
    assert result["rows"][0][0] == 1 and result["rows"][0][2] == [1, 2]
    con.close()
