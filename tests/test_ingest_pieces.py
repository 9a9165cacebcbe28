"""A spool segment ingested in pieces (storage.writer: parsed and prepared on a thread while
the database takes the piece before), on both stores: every record exactly once, whatever
piece a replayed id or a corrupt line falls in."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import orjson

from storage.records import encode_record
from storage.search_index import queue_for_index
from storage.spool import Spool
from storage.store import migrate_store, open_store
from storage.writer import LogWriter, piece_bounds
from tests.conftest import both_stores


def record(n: int) -> dict[str, Any]:
    answer = "" if n % 5 == 0 else f"answer {n}"  # every fifth has no answer: untrainable
    return {
        "id": f"0190-{n:08d}", "created_at": 1_700_000_000_000_000 + n,
        "endpoint": "chat.completions", "model": "gpt-4o-mini", "traffic": "production",
        "request": orjson.dumps({"messages": [{"role": "user", "content": f"question {n}"}]})
        .decode(),
        "response": orjson.dumps({"choices": [{"message": {"role": "assistant",
                                                           "content": answer}}]}).decode(),
        "status_code": 200, "finish": "stop", "stream": False, "tags": ["t"],
    }


def test_pieces_cover_a_segment_once_and_cut_at_line_ends() -> None:
    data = b"".join(encode_record(record(n)) for n in range(23))
    for rows in (1, 4, 7, 22, 23, 1000):
        bounds = piece_bounds(data, rows)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(data)
        assert all(end == start for (_, end), (start, _) in itertools.pairwise(bounds))
        assert all(data[end - 1:end] == b"\n" for _, end in bounds)
        assert len(bounds) == -(-23 // rows)
    torn = data + b'{"id": "torn", "crea'  # the last line has no newline: in the last piece
    assert piece_bounds(torn, 4)[-1][1] == len(torn)
    assert piece_bounds(b"", 4) == [(0, 0)]


@both_stores
def test_a_segment_in_pieces_with_replayed_ids_and_a_corrupt_line(
        store: str, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10_000_000)

    async def run() -> tuple[int, int, list[Any], list[Any], list[Any]]:
        db = open_store(store)
        try:
            migrate_store(db)
            writer = LogWriter(db, spool, batch_rows=10, piece_rows=4,
                               after_insert=queue_for_index)
            for n in range(5, 10):  # ingested before: their replay lands in pieces 2 and 3
                writer.log(record(n))
            first = await writer.ingest_pending()
            for n in range(23):
                writer.log(record(n))
                if n == 12:  # a corrupt line in the middle piece: skipped, the rest kept
                    spool.append(b'{"id": "0190-broken", "created_at": oops}\n')
            second = await writer.ingest_pending()
            ids = await db.read(lambda con: con.execute(
                "SELECT id FROM interactions ORDER BY id").fetchall())
            pending = await db.read(lambda con: con.execute(
                "SELECT interaction_id FROM search_pending ORDER BY 1").fetchall())
            untrainable = await db.read(lambda con: con.execute(
                "SELECT interaction_id FROM untrainable ORDER BY 1").fetchall())
            return first, second, ids, pending, untrainable
        finally:
            db.close()

    first, second, ids, pending, untrainable = asyncio.run(run())
    assert (first, second) == (5, 18)
    every = [f"0190-{n:08d}" for n in range(23)]
    assert [r[0] for r in ids] == every  # each once
    assert [r[0] for r in pending] == every  # listed for the search indexer, each once
    assert [r[0] for r in untrainable] == [f"0190-{n:08d}" for n in range(0, 23, 5)]
    assert spool.size_bytes == 0
