"""`forget` with rows still waiting in a spool (another replica's, or this one's after a
crash): they are not ingested afterwards; the user's later traffic is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from storage.governance import forget_user
from storage.records import insert_interactions, to_arrow
from storage.store import migrate_store, open_store
from tests.conftest import both_stores


def _row(id_: str, user: str, at: datetime) -> dict[str, Any]:
    return {"id": id_, "created_at": at, "endpoint": "chat.completions",
            "traffic": "production", "user_id": user, "status_code": 200,
            "request": '{"messages": [{"role": "user", "content": "my address is ..."}]}',
            "response": '{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}'}


@both_stores
def test_rows_spooled_before_a_forget_are_not_ingested_after_it(store: str) -> None:
    db = open_store(store)
    try:
        migrate_store(db)
        before = datetime.now(UTC) - timedelta(seconds=5)
        db.write_sync(lambda con: insert_interactions(con, to_arrow(
            [_row("a-1", "alice", before), _row("b-1", "bob", before)])))
        db.write_sync(lambda con: forget_user(con, "alice"))
        # another replica ingests its spool now: alice's older row, bob's, alice's new one
        later = datetime.now(UTC) + timedelta(seconds=1)
        inserted = db.write_sync(lambda con: insert_interactions(con, to_arrow(
            [_row("a-2", "alice", before), _row("b-2", "bob", before),
             _row("a-3", "alice", later)])))
        assert inserted == 2
        ids = db.read_sync(lambda con: con.execute(
            "SELECT id FROM interactions ORDER BY id").fetchall())
        assert [i for (i,) in ids] == ["a-3", "b-1", "b-2"]
    finally:
        db.close()
