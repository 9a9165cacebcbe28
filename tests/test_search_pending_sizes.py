"""Search's unindexed tail and the indexer's batches size the listed rows by what ingest listed
with them (`search_pending.text_bytes`, migration 53), never by reading their values (review
r12x4 HIGH: on Postgres that detoasted every value, and 30 big compressible rows among the
newest 500 made every search run out of its budget). Rows listed without a size (before the
migration, or by a replica of the version before during a rolling deploy) are left out of the
tail and measured by the indexer, only as far as a batch takes them. The recount of the rows
the tail leaves out runs under a statement timeout on Postgres."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.messages import REVIEWABLE_ENDPOINTS
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.search_fair import keyed_sizes, pending_batch
from storage.search_index import SearchIndexer, queue_for_index
from storage.search_lag import tail_missed_within
from storage.search_queue import BackgroundIndexer
from storage.search_tail import (
    DEFAULT_TAIL,
    TAIL_BYTES,
    TailLimits,
    measured_size,
    sized,
    tail_missed,
    tail_rows,
    tail_sizes,
)
from storage.store import Store, migrate_store, open_store
from tests.conftest import both_stores
from tests.pg_cluster import PgCluster
from tests.test_search_languages import item

BIG = 40_000  # bytes of a big row's answer (under the tail's TAIL_ROW_BYTES)
on_postgres = pytest.mark.parametrize("store", ["postgres"], indirect=True)


@pytest.fixture
def db(store: str) -> Iterator[Store]:
    opened = open_store(store)
    try:
        migrate_store(opened)
        yield opened
    finally:
        opened.close()


def rows(big: set[int], n: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows `start`..`start + n - 1`, each with the word `wordK`; those in `big` have a long
    answer with `bigword`."""
    return [item(k, f"hello word{k}", "bigword " + "x" * BIG if k in big else "fine")
            for k in range(start, start + n)]


def ingest(db: Store, data: list[dict[str, Any]], *, listing: Any = queue_for_index) -> None:
    db.write_sync(lambda con: insert_interactions(con, to_arrow(data), then=listing))


def listed_by_version_52(con: Connection, batch: pa.Table) -> None:
    """What version 52's ingest lists (its queue_for_index): the ids alone."""
    ids = [i for i, e in zip(batch["id"].to_pylist(), batch["endpoint"].to_pylist(),
                             strict=True) if e in REVIEWABLE_ENDPOINTS]
    con.execute("INSERT INTO search_pending (interaction_id) SELECT unnest(?::VARCHAR[]) "
                "ON CONFLICT DO NOTHING", [ids])


def listed(db: Store) -> dict[str, int | None]:
    return dict(db.read_sync(lambda con: con.execute(
        "SELECT interaction_id, text_bytes FROM search_pending").fetchall()))


def text_size(row: dict[str, Any]) -> int:
    return sum(len((row[name] or "").encode()) for name in ("request", "response"))


def search(db: Store, q: str) -> list[str]:
    return db.read_sync(lambda con: find_ids(con, ReviewQuery(q=q), limit=50)[0])


def batches(db: Store, max_bytes: int) -> list[list[str]]:
    """The indexer's batches of what is listed, as its read-ahead chains them (nothing
    claimed)."""
    found: list[list[str]] = []
    after: str | None = None
    while True:
        batch, more, _ = db.read_sync(functools.partial(
            pending_batch, max_rows=100, max_bytes=max_bytes, after=after))
        if batch.num_rows:
            found.append(batch["id"].to_pylist())
            after = max(found[-1])
        if not more:
            return found


@both_stores
def test_ingest_lists_each_row_with_the_size_of_its_stored_text(db: Store) -> None:
    data = [item(0, "héllo wörld ✓ パスワード", "réponse 🙂"), rows({1}, 1, start=1)[0],
            dict(item(2, "no answer yet", ""), response=None),
            dict(item(3, "embedded", ""), endpoint="embeddings")]
    ingest(db, data)
    # a row listed already: Postgres' COPY fails, and the INSERT that skips it lists the rest
    again = rows(set(), 3, start=10)
    db.write_sync(lambda con: con.execute(
        "INSERT INTO search_pending (interaction_id) VALUES (?)", [again[0]["id"]]))
    ingest(db, again)
    sizes = listed(db)
    assert data[3]["id"] not in sizes  # not reviewable: not listed
    assert sizes[again[0]["id"]] is None  # listed before, without a size: left as it was
    expected = {r["id"]: text_size(r) for r in data[:3] + again[1:]}
    assert {k: sizes[k] for k in expected} == expected
    assert expected[data[1]["id"]] > BIG and expected[data[0]["id"]] > len(data[0]["request"])
    # the same meaning as the size the database counts from the stored values
    assert expected == {k: db.read_sync(lambda con, k=k: measured_size(con, k))
                        for k in expected}


@both_stores
def test_the_tail_and_the_batches_go_by_the_listed_size_not_the_values(db: Store) -> None:
    data = rows({1, 2}, 6)
    ingest(db, data)
    # the big rows listed as small: read by the tail and batched together, whatever they hold
    db.write_sync(lambda con: con.execute("UPDATE search_pending SET text_bytes = 10"))
    everything = [r["id"] for r in reversed(data)]
    assert db.read_sync(lambda con: tail_rows(con, TailLimits(bytes=BIG // 2)))["id"].to_pylist() \
        == everything
    assert batches(db, BIG // 2) == [everything[::-1]]
    # and a small row listed as bigger than the tail's budget is left out of it
    db.write_sync(lambda con: con.execute(
        "UPDATE search_pending SET text_bytes = ? WHERE interaction_id = ?",
        [TAIL_BYTES + 1, data[4]["id"]]))
    assert db.read_sync(tail_rows)["id"].to_pylist() == [
        i for i in everything if i != data[4]["id"]]
    assert db.read_sync(lambda con: tail_missed(con, 6)) == 1


@pytest.fixture
def list_reader(pg_cluster: PgCluster, store: str) -> Iterator[str]:
    """The URL of a role that may read `search_pending` and no other table."""
    name = f"tl_pending_{secrets.token_hex(4)}"
    dbname = store.rsplit("/", 1)[-1]
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN'.encode())
    with psycopg.connect(store, autocommit=True) as owner:
        owner.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"'.encode())
        owner.execute(f'GRANT SELECT ON search_pending TO "{name}"'.encode())
    yield pg_cluster.url(dbname, name)
    with psycopg.connect(pg_cluster.admin_url(dbname), autocommit=True) as admin:
        admin.execute(f'DROP OWNED BY "{name}"'.encode())
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{name}"'.encode())


@on_postgres
def test_sizing_reads_search_pending_alone(db: Store, list_reader: str) -> None:
    """No value is read to size a row: the sizing runs for a role that can't read
    `interactions` at all."""
    data = rows({1, 3}, 5)
    ingest(db, data)
    expected = sorted((r["id"], text_size(r)) for r in data)
    with psycopg.connect(list_reader, autocommit=True) as raw:
        con = PgConnection(raw)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute("SELECT count(*) FROM interactions")
        assert tail_sizes(con, DEFAULT_TAIL) == [(i, size, "") for i, size in expected[::-1]]
        assert tail_missed(con, 5) == 0
        listed_rows = [(i, size) for i, size, _ in keyed_sizes(con, 100, None)]  # a batch's
        assert sized(con, listed_rows, BIG // 2) == expected


@both_stores
def test_a_store_upgraded_with_rows_listed_without_a_size(store: str) -> None:
    """Rows listed at migration 52 (and by a version-52 replica after the upgrade) have no
    size: the tail leaves them out (found once indexed, counted as missed), the indexer
    measures them only as far as a batch takes them; the rows listed since carry theirs."""
    db = open_store(store)
    try:
        migrate_store(db, up_to=52)
        old = rows({0, 1, 4}, 8)
        ingest(db, old, listing=listed_by_version_52)
        migrate_store(db)
        assert listed(db) == {r["id"]: None for r in old}
        assert db.read_sync(tail_rows).num_rows == 0
        assert db.read_sync(lambda con: tail_missed(con, 8)) == 8
        assert search(db, "word2") == []  # found once indexed

        new = rows({9}, 3, start=8)
        ingest(db, new)
        late = rows(set(), 1, start=11)  # a version-52 replica's ingest, after the upgrade
        ingest(db, late, listing=listed_by_version_52)
        sizes = listed(db)
        assert {r["id"]: sizes[r["id"]] for r in new} == {r["id"]: text_size(r) for r in new}
        assert sizes[late[0]["id"]] is None
        assert db.read_sync(tail_rows)["id"].to_pylist() == [r["id"] for r in reversed(new)]
        assert db.read_sync(lambda con: tail_missed(con, 12)) == 9
        assert search(db, "word10") == [new[2]["id"]] and search(db, "word11") == []

        # measured one at a time, no further than a batch of BIG // 2 bytes takes them: a big
        # first row alone, then nothing past it
        unsized = [(i, size) for i, size, _ in
                   db.read_sync(lambda con: keyed_sizes(con, 100, None))]
        assert db.read_sync(lambda con: sized(con, unsized, BIG // 2)) == \
            [(old[0]["id"], text_size(old[0]))]
        assert db.read_sync(lambda con: sized(con, unsized[2:], 10 * BIG, max_measured=2)) \
            == [(r["id"], text_size(r)) for r in old[2:4]]
        ids = [r["id"] for r in old + new + late]
        assert batches(db, BIG // 2) == [
            ids[0:1], ids[1:2], ids[2:4], ids[4:5], ids[5:9], ids[9:10], ids[10:12]]

        indexer = BackgroundIndexer(db, SearchIndexer(None), batch_bytes=BIG // 2)
        asyncio.run(indexer.refresh_lag())
        assert indexer.stats.lag_rows == 12 and indexer.stats.tail_missed_rows == 9
        assert asyncio.run(indexer.index_pending()) == 12
        assert indexer.stats.lag_rows == 0 and indexer.stats.tail_missed_rows == 0
        assert search(db, "word2") == [old[2]["id"]] and search(db, "word11") == [late[0]["id"]]
        assert search(db, "bigword") == [ids[9], ids[4], ids[1], ids[0]]
    finally:
        db.close()


@on_postgres
def test_the_recount_of_rows_the_tail_leaves_out_is_bounded_in_time(
        db: Store, store: str) -> None:
    """A lock held on `search_pending` (a migration's, waiting behind a reader) stops the
    recount at its statement timeout instead of holding the replica's background loop."""
    data = rows(set(), 4)
    ingest(db, data[:2], listing=listed_by_version_52)  # no size: left out of the tail
    ingest(db, data[2:])
    with psycopg.connect(store) as holder:  # a transaction, open until the block ends
        holder.execute(b"LOCK TABLE search_pending IN ACCESS EXCLUSIVE MODE")
        assert db.read_sync(functools.partial(
            tail_missed_within, lag_rows=4, timeout_s=0.2)) is None
    assert db.read_sync(functools.partial(tail_missed_within, lag_rows=4, timeout_s=5.0)) == 2

    counted = BackgroundIndexer(db, SearchIndexer(None))
    asyncio.run(counted.refresh_lag())
    assert counted.stats.tail_missed_rows == 2
    # a recount that can't finish in time keeps what is sure, and fails nothing
    uncounted = BackgroundIndexer(db, SearchIndexer(None), tail_check_timeout_s=0.0)
    asyncio.run(uncounted.refresh_lag())
    assert uncounted.stats.lag_rows == 4 and uncounted.stats.tail_missed_rows == 0
    assert uncounted.stats.failures == 0 and uncounted.stats.last_error is None


@on_postgres
def test_the_lag_count_is_bounded_in_time_and_unknown_when_not_done(
        db: Store, store: str) -> None:
    """r12y MED 3: the lag's count ran without a statement timeout; behind a lock held on
    `search_pending` it held the replica's background loop. Now it stops at its timeout, and
    /healthz and /metrics say unknown (`lag_known`) until a count is done again."""
    ingest(db, rows(set(), 3))
    indexer = BackgroundIndexer(db, SearchIndexer(None), lag_timeout_s=0.2)
    asyncio.run(indexer.refresh_lag())
    assert (indexer.stats.lag_rows, indexer.stats.lag_known) == (3, True)
    with psycopg.connect(store) as holder:
        holder.execute(b"LOCK TABLE search_pending IN ACCESS EXCLUSIVE MODE")
        asyncio.run(indexer.refresh_lag())
        assert indexer.stats.lag_known is False and indexer.stats.lag_rows == 3
        assert indexer.stats.failures == 0 and indexer.stats.last_error is None
    asyncio.run(indexer.refresh_lag())
    assert (indexer.stats.lag_rows, indexer.stats.lag_known) == (3, True)
