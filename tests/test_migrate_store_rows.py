"""`tuneloop migrate-store` with rows it can't copy, a source changed between two runs, and a
destination that replicas serve (and write) during the copy.

- A row the destination can't hold (a NUL character in Postgres text, a time DuckDB calls
  `infinity`) or that can't be read from the source (Postgres `infinity`) stops the copy with
  its table, key and why (exit 2, no traceback); fixed in the source, the same command
  continues and verifies.
- A resume refuses a source whose rows already copied changed (an UPDATE, or a DELETE plus an
  INSERT: same row count), and copies rows changed beyond them as they are now.
- Rows replicas write into the destination during the copy are kept and reported as beyond
  the source, not a difference (the copy, and every rerun, exits 0).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from storage.transfer import Transfer
from storage.transfer_stores import label, transfer_stores
from tests.conftest import FakeUpstream, running_proxy
from tests.test_migrate_store import flat, migrate, source_store, table_rows

__all__ = ["source_store"]  # the fixture, used by name

FIRST_ID = "(SELECT min(id) FROM interactions)"
LAST_ID = "(SELECT max(id) FROM interactions)"


def first_id(db: str) -> str:
    con = duckdb.connect(db, read_only=True)
    try:
        row = con.execute(f"SELECT {FIRST_ID}").fetchone()
        assert row is not None
        return str(row[0])
    finally:
        con.close()


def change(db: str, *sql: str) -> None:
    """Write to a DuckDB store or a Postgres one (by hand, as an operator would)."""
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as con:
            for statement in sql:
                con.execute(statement)
        return
    con = duckdb.connect(db)
    try:
        for statement in sql:
            con.execute(statement)
    finally:
        con.close()


UNWRITABLE = {
    "nul_reason": (
        ["UPDATE review_revisions SET reason = 'bad' || chr(0) || 'reason'"],
        "review_revisions row (interaction_id=",
        "its reason holds a NUL character (U+0000), which Postgres text can't store",
        ["UPDATE review_revisions SET reason = replace(reason, chr(0), '')"]),
    "nul_tag": (
        [f"UPDATE interactions SET tags = ['ok', 'b' || chr(0)] WHERE id = {FIRST_ID}"],
        "interactions row (id=",
        "its tags holds a NUL character (U+0000)",
        [f"UPDATE interactions SET tags = ['ok'] WHERE id = {FIRST_ID}"]),
    "infinity": (
        [f"UPDATE interactions SET created_at = 'infinity' WHERE id = {LAST_ID}"],
        "interactions row (id=",
        "its created_at is outside the years 1 to 9999 (an infinity?)",
        [f"UPDATE interactions SET created_at = now() WHERE id = {LAST_ID}"]),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_a_row_postgres_cant_hold_stops_the_copy_naming_it(
        source_store: tuple[str, dict[str, Any]], pg_url: str, case: str) -> None:
    source, _ = source_store
    breaks, where, why, fix = UNWRITABLE[case]
    change(source, *breaks)
    for _ in range(2):  # the same answer when run again
        result = migrate("--from", source, "--to", pg_url, "--batch-rows", "5")
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        out = " ".join(result.output.split())
        assert "Traceback" not in out
        assert where in out and why in out, out
        assert "run the same command again" in out
    change(source, *fix)
    result = migrate("--from", source, "--to", pg_url, "--batch-rows", "5")
    assert result.exit_code == 0, result.output
    assert table_rows(pg_url) == table_rows(source)


def test_an_infinite_time_in_a_postgres_source_stops_the_copy_naming_it(
        source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path) -> None:
    source, _ = source_store
    assert migrate("--from", source, "--to", pg_url, "-q").exit_code == 0
    change(pg_url, f"UPDATE interactions SET created_at = 'infinity' WHERE id = {LAST_ID}")
    back = str(tmp_path / "back.duckdb")
    result = migrate("--from", pg_url, "--to", back, "--batch-rows", "5")
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "Traceback" not in out
    assert "interactions row (id=" in out and "can't be read from" in out
    assert "its created_at is outside the years 1 to 9999" in out
    change(pg_url, f"UPDATE interactions SET created_at = now() WHERE id = {LAST_ID}")
    result = migrate("--from", pg_url, "--to", back, "--batch-rows", "5")
    assert result.exit_code == 0, result.output
    assert table_rows(back) == table_rows(pg_url)


class Stop(Exception):
    pass


def copy_part_of(source: str, dest: str) -> None:
    """Copy until half the interactions are in, then stop (as a kill would)."""
    def stop_midway(table: str, done: int, total: int) -> None:
        if table == "interactions" and done >= total // 2 > 0:
            raise Stop

    with transfer_stores(source, dest) as (src, dst):
        transfer = Transfer(src, dst, source_label=label(source), batch_rows=2)
        with pytest.raises(Stop):
            transfer.copy(transfer.prepare(), stop_midway)


CHANGES_TO_COPIED_ROWS = {
    "update": [f"UPDATE interactions SET model = 'changed' WHERE id = {FIRST_ID}"],
    "delete_and_insert": [
        f"DELETE FROM interactions WHERE id = {FIRST_ID}",
        "INSERT INTO interactions (id, created_at, endpoint) VALUES "
        "('zzzz-late', now(), '/v1/chat/completions')"],
}


def partly_copied(source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path,
                  source_kind: str) -> tuple[str, str]:
    """The source store (copied into Postgres first for `postgres`) and a DuckDB copy of it
    stopped part way."""
    source, _ = source_store
    if source_kind == "postgres":
        assert migrate("--from", source, "--to", pg_url, "-q").exit_code == 0
        source = pg_url
    dest = str(tmp_path / "copy.duckdb")
    copy_part_of(source, dest)
    return source, dest


@pytest.mark.parametrize("what", sorted(CHANGES_TO_COPIED_ROWS))
@pytest.mark.parametrize("source_kind", ["duckdb", "postgres"])
def test_resume_refuses_a_source_whose_copied_rows_changed(
        source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path, what: str,
        source_kind: str) -> None:
    source, dest = partly_copied(source_store, pg_url, tmp_path, source_kind)
    change(source, *CHANGES_TO_COPIED_ROWS[what])
    result = migrate("--from", source, "--to", dest)
    assert result.exit_code == 5, result.output
    assert ("the source changed since this copy started: interactions (among its first"
            in " ".join(result.output.split()))


@pytest.mark.parametrize("source_kind", ["duckdb", "postgres"])
def test_resume_copies_rows_changed_beyond_those_copied(
        source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path,
        source_kind: str) -> None:
    source, dest = partly_copied(source_store, pg_url, tmp_path, source_kind)
    change(source, f"UPDATE interactions SET model = 'changed' WHERE id = {LAST_ID}",
           "INSERT INTO routes VALUES ('late', '{}', now(), 'me')")
    result = migrate("--from", source, "--to", dest)
    assert result.exit_code == 0, result.output
    assert "resuming:" in result.output
    assert table_rows(dest) == table_rows(source)


def test_rows_replicas_write_during_the_copy_stay_and_are_reported(
        source_store: tuple[str, dict[str, Any]], pg_url: str, tmp_path: Path,
        fake_openai: FakeUpstream) -> None:
    """A replica serves the destination (README: replicas reload when the copy ends) and
    takes traffic and a review while the copy runs: every source row arrives, the live rows
    stay, and the check says so (before: exit 7, "start again", on every run)."""
    source, _ = source_store
    with running_proxy(tmp_path, fake_openai, db=pg_url) as server:
        live: list[str] = []

        def traffic_midway(table: str, done: int, total: int) -> None:
            if table == "reviews" and not live:
                client = server.openai()
                for n in range(3):
                    answer = client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": f"live {n}"}])
                    live.append(answer.headers["x-tuneloop-id"])
                with psycopg.connect(pg_url) as con:
                    deadline = time.monotonic() + 20
                    while con.execute("SELECT count(*) FROM interactions WHERE id = ANY(%s)",
                                      [live]).fetchone() != (3,):
                        assert time.monotonic() < deadline, "the live rows never arrived"
                        time.sleep(0.02)

        with transfer_stores(source, pg_url) as (src, dst):
            transfer = Transfer(src, dst, source_label=label(source), batch_rows=3)
            plan = transfer.prepare()
            transfer.copy(plan, traffic_midway)
            checks = {c.table: c for c in transfer.verify(plan)}
        assert live and all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
        assert checks["interactions"].beyond == 3
        assert checks["interactions"].dest.rows == checks["interactions"].source.rows + 3
        for _ in range(2):  # and as often as it is run again
            result = migrate("--from", source, "--to", pg_url)
            assert result.exit_code == 0, result.output
            out = flat(result.output)
            assert flat("verified: every source row is in the destination") in out
            assert flat("rows the destination has beyond the source") in out
        server.close()
    copied, original = table_rows(pg_url), table_rows(source)
    for table, rows in original.items():
        left = list(copied[table])
        for row in rows:  # each source row, once (== across backends: tz-aware times)
            assert row in left, (table, row)
            left.remove(row)


def test_a_row_the_destination_refuses_for_another_reason_is_named(
        source_store: tuple[str, dict[str, Any]], pg_url: str) -> None:
    """Any other refusal (here a CHECK an administrator added): the batch's rows are tried in
    halves down to the first one refused, named with the database's reason."""
    source, _ = source_store
    reason = "review_revisions row (interaction_id="
    change(pg_url, "SELECT 1")  # the schema comes with the copy: add the CHECK after it
    assert migrate("--from", source, "--to", pg_url, "-q").exit_code == 0
    with psycopg.connect(pg_url) as con:
        con.execute("TRUNCATE review_revisions")
        con.execute("UPDATE _store_transfer SET rows_done = 0, copied_digest = '0' "
                    "WHERE table_name = 'review_revisions'")
        con.execute("ALTER TABLE review_revisions ADD CONSTRAINT polite "
                    "CHECK (reason IS DISTINCT FROM 'wrong')")
    result = migrate("--from", source, "--to", pg_url, "--batch-rows", "5")
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "Traceback" not in out
    assert reason in out and "revision=1)" in out and 'violates check constraint "polite"' in out


def test_a_source_row_changed_in_the_destination_is_named(
        source_store: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """A row the destination holds differently (a replica changed a copied route, say) is a
    difference, named by its key, on every run (exit 7)."""
    source, _ = source_store
    dest = str(tmp_path / "copy.duckdb")
    assert migrate("--from", source, "--to", dest, "-q").exit_code == 0
    change(dest, "UPDATE routes SET updated_by = 'a replica'")
    for _ in range(2):
        result = migrate("--from", source, "--to", dest)
        assert result.exit_code == 7, result.output
        out = " ".join(result.output.split())
        assert "the destination lacks source rows (or holds them changed): " \
               "routes: 1 rows, e.g. (alias='support')" in out, out
