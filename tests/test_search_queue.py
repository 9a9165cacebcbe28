"""The search index written off the ingest path (storage.search_queue): ingest lists the new
rows, the background indexer catches up; search finds a row before it is indexed; a crash
mid-index, a racing replica or a `forget` meanwhile never leave duplicate or orphan terms."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storage.governance import forget_user
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.search_index import (
    SearchIndexer,
    batch_forward_index,
    index_batch,
    index_edit,
    pending_rows,
    queue_for_index,
    store_claimed,
)
from storage.search_queue import BackgroundIndexer
from storage.store import Store, migrate_store, open_store
from storage.trainable import mark_untrainable
from tests.conftest import both_stores
from tests.test_search_languages import TEXTS, item

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ("パスワード", "忘记", "비밀번호", "ลืม", "refund", "refunds", "hello", "strasse",
           "shipping address", "invoice")
ROWS = [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)]


@contextmanager
def migrated(spec: str | Path) -> Iterator[Store]:
    """A store opened and migrated, closed after."""
    opened = open_store(spec)
    try:
        migrate_store(opened)
        yield opened
    finally:
        opened.close()


@pytest.fixture
def db(store: str) -> Iterator[Store]:
    with migrated(store) as opened:
        yield opened


def ingest(db: Store, rows: list[dict[str, Any]]) -> int:
    return db.write_sync(lambda con: insert_interactions(con, to_arrow(rows),
                                                          then=queue_for_index))


def count(db: Store, sql: str) -> int:
    return int(db.read_sync(lambda con: con.execute(sql).fetchall())[0][0])


def postings(db: Store) -> list[tuple[Any, ...]]:
    """Every row of the term index (repeats kept: a stem of two words of a text is two)."""
    return [tuple(r) for r in db.read_sync(lambda con: con.execute(
        "SELECT term_key, interaction_id, fields FROM search_terms ORDER BY 1, 2, 3").fetchall())]


def search(db: Store) -> dict[str, list[str]]:
    return {q: db.read_sync(lambda con, q=q: find_ids(con, ReviewQuery(q=q), limit=20)[0])
            for q in QUERIES}


@dataclass(frozen=True)
class Inline:
    """ROWS with the index written inline, in the ingest transaction (as before the
    background indexer): what every way of indexing them must end up with."""
    postings: list[tuple[Any, ...]]
    answers: dict[str, list[str]]


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Inline:
    with migrated(tmp_path_factory.mktemp("inline") / "inline.duckdb") as reference:
        reference.write_sync(lambda con: (insert_interactions(con, to_arrow(ROWS)),
                                          index_batch(con, to_arrow(ROWS))))
        return Inline(postings(reference), search(reference))


@both_stores
def test_search_finds_rows_before_the_indexer_catches_up_and_after(
        db: Store, inline: Inline) -> None:
    expected = inline.answers
    assert all(expected.values()) and expected["パスワード"] == [ROWS[0]["id"]]
    assert ingest(db, ROWS) == len(ROWS)
    assert count(db, "SELECT count(*) FROM search_docs") == 0
    assert count(db, "SELECT count(*) FROM search_pending") == len(ROWS)
    assert search(db) == expected  # the unindexed tail, tokenized at query time

    indexer = BackgroundIndexer(db, SearchIndexer(None), batch_rows=5)

    async def run() -> int:
        await indexer.refresh_lag()
        assert indexer.stats.lag_rows == len(ROWS) and indexer.stats.lag_seconds > 0
        return await indexer.index_pending()

    assert asyncio.run(run()) == len(ROWS)
    assert indexer.stats.lag_rows == 0 and indexer.stats.lag_seconds == 0
    assert count(db, "SELECT count(*) FROM search_pending") == 0
    assert count(db, "SELECT count(*) FROM search_docs") == len(ROWS)
    assert postings(db) == inline.postings
    assert search(db) == expected
    assert ingest(db, ROWS) == 0  # a replayed segment lists nothing again
    assert count(db, "SELECT count(*) FROM search_pending") == 0


CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from storage.store import open_store
from storage.search_index import _claim_and_store, batch_forward_index, pending_rows
db = open_store(sys.argv[1])
batch = db.read_sync(lambda con: pending_rows(con, 100))
forward = batch_forward_index(batch)

def write(con):
    con.execute("BEGIN TRANSACTION")  # store_claimed's transaction, killed before COMMIT
    _claim_and_store(con, forward, batch["id"].to_pylist())
    print("stored", flush=True)
    time.sleep(120)

db.write_sync(write)
"""


@both_stores
def test_a_kill_mid_index_leaves_the_rows_listed_and_indexes_each_once(
        db: Store, store: str, inline: Inline) -> None:
    ingest(db, ROWS)
    half = db.read_sync(lambda con: pending_rows(con, 6))
    db.write_sync(lambda con: store_claimed(con, batch_forward_index(half),
                                            half["id"].to_pylist()))
    if not store.startswith("postgresql"):
        db.close()  # the child process takes the DuckDB file
    child = subprocess.Popen([sys.executable, "-c", CHILD, store, str(ROOT)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "stored"
    finally:
        child.kill()  # SIGKILL, its write transaction open
        child.wait()
    again = open_store(store) if not store.startswith("postgresql") else db
    try:
        assert count(again, "SELECT count(*) FROM search_pending") == len(ROWS) - 6
        asyncio.run(BackgroundIndexer(again, SearchIndexer(None)).index_pending())
        assert count(again, "SELECT count(*) FROM search_pending") == 0
        assert count(again, "SELECT count(*) FROM search_docs") == len(ROWS)
        assert postings(again) == inline.postings
    finally:
        if again is not db:
            again.close()


@both_stores
def test_a_forget_while_the_indexer_computes_leaves_no_terms_of_the_user(db: Store) -> None:
    rows = [dict(r, user_id="alice" if n % 2 else "bob") for n, r in enumerate(ROWS)]
    ingest(db, rows)
    batch = db.read_sync(lambda con: pending_rows(con, 100))
    forward = batch_forward_index(batch)  # the indexer computes; meanwhile, forget runs
    db.write_sync(lambda con: forget_user(con, "alice"))
    taken = db.write_sync(lambda con: store_claimed(con, forward, batch["id"].to_pylist()))
    assert taken == len(rows) // 2
    alice = [r["id"] for r in rows if r["user_id"] == "alice"]
    for table in ("search_docs", "search_terms", "search_words"):
        left = db.read_sync(lambda con, table=table: con.execute(
            f"SELECT count(*) FROM {table} WHERE interaction_id = ANY(?)", [alice]).fetchall())
        assert left[0][0] == 0, table
    assert count(db, "SELECT count(*) FROM search_docs") == len(rows) // 2


@both_stores
def test_replicas_indexing_the_same_rows_write_them_once(db: Store, inline: Inline) -> None:
    ingest(db, ROWS)
    batch = db.read_sync(lambda con: pending_rows(con, 100))
    first, second = batch_forward_index(batch), batch_forward_index(batch)
    ids = batch["id"].to_pylist()
    assert db.write_sync(lambda con: store_claimed(con, first, ids)) == len(ROWS)
    assert db.write_sync(lambda con: store_claimed(con, second, ids)) == 0
    assert postings(db) == inline.postings
    assert count(db, "SELECT count(*) FROM search_docs") == len(ROWS)


def test_an_edit_of_a_row_not_yet_indexed_keeps_its_logged_text(db: Store) -> None:
    ingest(db, ROWS[:1])
    edited = [{"role": "user", "content": "zebra crossing"},
              {"role": "assistant", "content": "ok"}]
    db.write_sync(lambda con: index_edit(con, ROWS[0]["id"], edited))
    assert count(db, "SELECT count(*) FROM search_pending") == 0
    for q in ("パスワード", "zebra"):  # the logged text and the edit's
        assert db.read_sync(lambda con, q=q: find_ids(con, ReviewQuery(q=q), limit=5)[0]) \
            == [ROWS[0]["id"]], q


SHAPES: list[tuple[str, int | None, str | None, Any]] = [
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"content":"fine"}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"content":"  \\n"}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"content":""}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"content":null,'
                                      '"tool_calls":[{"id":"t"}]}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"tool_calls":[]}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"function_call":{"n":1}}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[{"message":{"content":[{"type":"text"}]}}]}'),
    ("chat.completions", 200, "stop", '{"choices":[]}'),
    ("chat.completions", 200, "stop", '{"choices":"x"}'),
    ("chat.completions", 200, "stop", '[1, 2]'),
    ("chat.completions", 200, "stop", None),
    ("chat.completions", 502, "upstream_error", '{"error":{"message":"bad"}}'),
    ("chat.completions", 429, None, '{"choices":[{"message":{"content":"fine"}}]}'),
    ("chat.completions", 200, "client_disconnected", '{"choices":[{"message":{"content":"a"}}]}'),
    ("chat.completions", 200, "timeout", None),
    ("chat.completions", None, "upstream_cut", '{"choices":[{"message":{"content":"a"}}]}'),
    ("completions", 200, "stop", '{"choices":[{"text":"done"}]}'),
    ("completions", 200, "stop", '{"choices":[{"text":" "}]}'),
    ("completions", 200, "stop", '{"choices":[{}]}'),
    ("responses", 200, "stop", '{"output":[{"type":"message"}]}'),
    ("responses", 200, "stop", '{"output":[]}'),
    ("responses", 200, "stop", '{"output":{}}'),
    ("embeddings", 200, "stop", '{"data":[]}'),
]


@both_stores
def test_the_untrainable_rule_at_ingest_agrees_with_the_sql_rule(db: Store) -> None:
    rows = [{"id": f"01900000-0000-7000-8000-{n:012d}", "created_at": 1_700_000_000_000_000,
             "endpoint": endpoint, "traffic": "production", "status_code": status,
             "finish": finish, "request": '{"messages":[{"role":"user","content":"hi"}]}',
             "response": response} for n, (endpoint, status, finish, response)
            in enumerate(SHAPES)]
    db.write_sync(lambda con: insert_interactions(con, to_arrow(rows)))
    listed = "SELECT interaction_id, reason FROM untrainable ORDER BY 1"
    at_ingest = db.read_sync(lambda con: con.execute(listed).fetchall())
    db.write_sync(lambda con: con.execute("DELETE FROM untrainable"))
    db.write_sync(lambda con: mark_untrainable(con, "interactions"))
    assert at_ingest == db.read_sync(lambda con: con.execute(listed).fetchall())
    assert len(at_ingest) == 16


@both_stores
def test_a_row_listed_already_is_listed_once(db: Store) -> None:
    """Postgres lists a batch with COPY: an id already on the list (left by an interaction
    deleted outside `forget`) must take the path that skips it, not fail the ingest."""
    db.write_sync(lambda con: con.execute(
        "INSERT INTO search_pending (interaction_id) VALUES (?)", [ROWS[0]["id"]]))
    assert ingest(db, ROWS) == len(ROWS)
    assert count(db, "SELECT count(*) FROM search_pending") == len(ROWS)
