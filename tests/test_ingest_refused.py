"""Ingest of records a database refuses, on both stores: the refused row is quarantined, every
other row of its segment is ingested, and the spool moves on.

Postgres text can't hold a NUL character (DuckDB's can); a JSON text may also carry an escaped
\\u0000 that Postgres keeps as `json` but can't turn into text. The writer must catch the
error of either driver, keep the ingest transaction alive (a savepoint on Postgres: a failed
statement aborts the whole transaction there) and set aside only the row at fault.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from storage.records import encode_record
from storage.spool import Spool
from storage.store import migrate_store, open_store
from storage.writer import LogWriter
from tests.conftest import both_stores


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"0190-{n:08d}",
        "created_at": 1_700_000_000_000_000 + n,
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "traffic": "production",
        "request": '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
        "response": '{"choices": [{"message": {"role": "assistant", "content": "hello"}}]}',
        "status_code": 200,
        "finish": "stop",
        "stream": False,
        "tags": ["a", 'quote " and \\ backslash', ""],
        "user_id": f"user-{n}",
        **extra,
    }


NUL_ROWS = {
    3: {"user_id": "mallory\x00"},
    7: {"error": "upstream said \x00 here", "status_code": 500},
    11: {"request": '{"model": "gpt-4o-mini", "messages": [{"role": "user", '
                    '"content": "nul \x00 raw"}]}'},
}


def ingest(store: str, spool: Spool) -> tuple[int, list[tuple[Any, ...]]]:
    async def run() -> tuple[int, list[tuple[Any, ...]]]:
        db = open_store(store)
        try:
            migrate_store(db)
            writer = LogWriter(db, spool, batch_rows=8)
            inserted = await writer.ingest_pending()
            rows = await db.read(lambda con: con.execute(
                "SELECT id, user_id, tags, error FROM interactions ORDER BY id").fetchall())
            return inserted, rows
        finally:
            db.close()
    return asyncio.run(run())


@both_stores
def test_rows_postgres_refuses_are_quarantined_and_the_rest_ingested(
        store: str, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000_000)
    for n in range(1, 21):
        spool.append(encode_record(record(n, **NUL_ROWS.get(n, {}))))
    inserted, rows = ingest(store, spool)

    ids = [row[0] for row in rows]
    quarantine = tmp_path / "spool" / "quarantine.jsonl"
    # Postgres refuses all three; DuckDB holds NUL characters but not a raw control
    # character inside a JSON string (invalid JSON)
    at_fault = NUL_ROWS if store.startswith("postgresql://") else {11: NUL_ROWS[11]}
    refused = {f"0190-{n:08d}" for n in at_fault}
    kept = [orjson.loads(line)["record"] for line in quarantine.read_bytes().splitlines()]
    assert {r["id"] for r in kept} == refused  # only the rows at fault, each once
    assert len(kept) == len(refused)
    assert all(kept_row["id"] not in ids for kept_row in kept)
    if 3 in at_fault:  # kept as it was, NUL included
        assert next(r for r in kept if r["id"] == "0190-00000003")["user_id"] == "mallory\x00"
    assert inserted == 20 - len(refused)
    assert ids == [f"0190-{n:08d}" for n in range(1, 21) if f"0190-{n:08d}" not in refused]
    first = rows[0]
    assert first[1] == "user-1" and list(first[2]) == ["a", 'quote " and \\ backslash', ""]
    assert first[3] is None  # NULL stays NULL, an empty string stays empty
    assert spool.size_bytes == 0  # the spool moved on

    # replaying the same records adds nothing (idempotent on id), refused rows included
    for n in range(1, 21):
        spool.append(encode_record(record(n, **NUL_ROWS.get(n, {}))))
    again, rows_again = ingest(store, spool)
    assert again == 0 and rows_again == rows
    assert len(quarantine.read_bytes().splitlines()) == 2 * len(refused)


@both_stores
def test_an_escaped_nul_in_the_answer_is_stored_and_judged(store: str, tmp_path: Path) -> None:
    """`\\u0000` inside a JSON string (what an SDK sends for a NUL character in a message):
    valid JSON, stored as it was written on both stores. Postgres can't turn it into text, so
    the untrainable check reads those rows in Python: the row is neither lost nor misjudged."""
    spool = Spool(tmp_path / "spool", max_bytes=10_000_000)
    answered = '{"choices": [{"message": {"role": "assistant", "content": "a\\u0000b"}}]}'
    empty = '{"choices": [{"message": {"role": "assistant", "content": "  "}}], "x": "\\u0000"}'
    for n in range(1, 6):
        response = {2: answered, 4: empty}.get(n, record(n)["response"])
        spool.append(encode_record(record(n, response=response)))
    inserted, rows = ingest(store, spool)
    assert not (tmp_path / "spool" / "quarantine.jsonl").exists()
    assert inserted == 5 and len(rows) == 5 and spool.size_bytes == 0

    async def listed() -> list[tuple[Any, ...]]:
        db = open_store(store)
        try:
            return await db.read(lambda con: con.execute(
                "SELECT interaction_id, reason FROM untrainable").fetchall())
        finally:
            db.close()
    assert asyncio.run(listed()) == [("0190-00000004", "no_answer")]
