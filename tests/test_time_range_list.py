"""A since/until review list on Postgres reads the range's rows, not every newer row first
(issue 12: the oldest day of 1M rows took 2.46 s walking the primary key from the newest id).
The rows a list reads are counted by Postgres itself (`pg_stat_xact_user_tables`, this
transaction's counts): no timing. Which items and in which order: tests/test_review_queries.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from storage.interactions import InteractionFilter
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.store import migrate_store, open_store

N = 4000
DAY = 400  # rows a "day"
T0 = 1_700_000_000_000_000  # microseconds


def moment(k: int) -> datetime:
    return datetime.fromtimestamp((T0 + k * 1000) / 1e6, UTC)


def rows() -> list[dict[str, Any]]:
    return [{
        "id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000", "created_at": T0 + k * 1000,
        "endpoint": "chat.completions", "model": "m", "traffic": "production",
        "request": orjson.dumps({"messages": [{"role": "user", "content": f"q{k}"}]}).decode(),
        "response": orjson.dumps({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": f"a{k}"}}]}).decode(),
        "status_code": 200, "tags": [], "user_id": f"u{k % 7}",
    } for k in range(N)]


def rows_read(con: Any, query: ReviewQuery, cursor: str | None = None
              ) -> tuple[list[str], int]:
    """One page's ids, and the rows of `interactions` Postgres read for it (a difference:
    Postgres 15's transaction counts also hold earlier transactions' counts not yet flushed)."""
    def counted() -> int:
        return int(con.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = 'interactions'").fetchall()[0][0])

    con.execute("BEGIN")
    try:
        before = counted()
        page, _ = find_ids(con, query, limit=50, cursor=cursor)
        return page, counted() - before
    finally:
        con.execute("COMMIT")


@pytest.mark.parametrize("query", [
    ReviewQuery(base=InteractionFilter(since=moment(0), until=moment(DAY))),
    ReviewQuery(review="pending", base=InteractionFilter(since=moment(0), until=moment(DAY))),
], ids=["plain", "pending"])
def test_an_old_day_reads_its_own_rows_not_the_newer_ones(pg_url: str,
                                                          query: ReviewQuery) -> None:
    db = open_store(pg_url)
    migrate_store(db)
    try:
        db.write_sync(lambda con: insert_interactions(con, to_arrow(rows())))
        db.write_sync(lambda con: con.execute("ANALYZE interactions"))
        page, read = db.read_sync(lambda con: rows_read(con, query))
        expected = [f"{0x01900000 + k:08x}-0000-7000-8000-000000000000"
                    for k in range(DAY - 1, DAY - 51, -1)]
        assert page == expected
        assert read <= 2 * DAY, f"{read} rows read for a page of the oldest day"
        _, read = db.read_sync(lambda con: rows_read(con, query, cursor=page[-1]))
        assert read <= 2 * DAY, f"{read} rows read for its second page"
    finally:
        db.close()
