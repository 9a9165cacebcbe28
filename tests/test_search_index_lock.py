"""The search indexer holds the deployment's write lock for one bounded write at a time
(review r12y MED 3). On Postgres the write that made the GIN index's pending list outgrow its
4 MB merged the whole list into the index under that lock (2.4-2.6 s at 300k rows, every
replica's reviews, claims and ingest behind it); the indexer now merges the list after each
of its writes, outside the lock (storage.search_vectors `clean_pending`).

Observed by Postgres itself, not timed: statement triggers on `search_docs` (installed here
by the superuser) log, before and after each insert, whether that backend holds the write
lock and how many entries the GIN's pending list holds (pgstattuple's `pgstatginindex`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from storage.backend.pg_database import WRITE_LOCK
from storage.queue import ReviewQuery, find_ids
from storage.review import ReviewAction, apply_reviews
from storage.search_forward import MAX_FIELD_TERMS
from storage.search_index import SearchIndexer
from storage.search_queue import WRITE_TERMS, BackgroundIndexer
from storage.store import Store
from tests.pg_cluster import PgCluster
from tests.test_search_languages import item
from tests.test_search_queue import count, ingest, migrated
from tests.test_search_wide import words

ROWS = 24  # at the caps: ~100k pending entries fill the 4 MB list, every ~7 rows
FIELD_WORDS = MAX_FIELD_TERMS + 100
FIELDS = 3  # a row at the caps has MAX_FIELD_TERMS terms in each


def wide(k: int) -> dict[str, Any]:
    system, user, answer = (" ".join([f"field{f}row", *words(FIELD_WORDS, 6, skip=(
        3 * k + f) * FIELD_WORDS)]) for f in range(3))
    return item(k, user, answer, system=system)


def logged_inserts(admin: psycopg.Connection[Any]) -> None:
    """Log each insert into search_docs (as the superuser, in its database)."""
    high, low = WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF
    admin.execute("CREATE EXTENSION pgstattuple")
    admin.execute("CREATE TABLE gin_log (seq bigserial, moment text, locked bool, "
                  "pending bigint)")
    admin.execute(f"""
        CREATE FUNCTION gin_log_insert() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = public AS $$
        BEGIN
            INSERT INTO gin_log (moment, locked, pending) SELECT TG_WHEN,
                EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND granted
                        AND locktype = 'advisory' AND classid = {high}
                        AND objid = {low} AND objsubid = 1),
                (SELECT pending_tuples FROM pgstatginindex('search_docs_lexemes'));
            RETURN NULL;
        END $$""".encode())
    for moment in ("BEFORE", "AFTER"):
        admin.execute(f"CREATE TRIGGER gin_log_{moment.lower()} {moment} INSERT ON "
                      "search_docs FOR EACH STATEMENT EXECUTE FUNCTION gin_log_insert()"
                      .encode())


@pytest.fixture
def db(pg_url: str) -> Iterator[Store]:
    with migrated(pg_url) as opened:
        yield opened


@pytest.fixture
def admin(db: Store, pg_url: str, pg_cluster: PgCluster) -> Iterator[psycopg.Connection[Any]]:
    """The superuser in the test's database, the inserts into search_docs logged."""
    name = pg_url.rsplit("/", 1)[-1]
    with psycopg.connect(pg_cluster.admin_url(name), autocommit=True) as connection:
        logged_inserts(connection)
        yield connection


def pending_entries(admin: psycopg.Connection[Any]) -> int:
    return int(admin.execute("SELECT pending_tuples FROM pgstatginindex("
                             "'search_docs_lexemes')").fetchall()[0][0])


def test_no_locked_indexer_write_merges_the_gin_pending_list(
        db: Store, admin: psycopg.Connection[Any]) -> None:
    rows = [wide(k) for k in range(ROWS)]
    assert ingest(db, rows) == ROWS
    approved: list[str] = []
    stop = threading.Event()

    def reviewer() -> None:  # a reviewer approving meanwhile: its writes queue with ours
        for row in rows * 2:
            if stop.is_set():
                return
            db.write_sync(lambda con, i=row["id"]: apply_reviews(
                con, [ReviewAction(i, "approve", "ann")]))
            approved.append(row["id"])

    thread = threading.Thread(target=reviewer)
    thread.start()
    try:
        indexer = BackgroundIndexer(db, SearchIndexer(None))
        assert asyncio.run(indexer.index_pending()) == ROWS
    finally:
        stop.set()
        thread.join()
    assert approved
    log = admin.execute("SELECT moment, locked, pending FROM gin_log ORDER BY seq").fetchall()
    inserts = [(before, after) for before, after in zip(log[::2], log[1::2], strict=True)]
    assert all(b[0] == "BEFORE" and a[0] == "AFTER" and b[1] == a[1] for b, a in inserts)
    locked = [(b[2], a[2]) for b, a in inserts if b[1]]
    assert len(locked) > 1  # the docs were written in several locked transactions
    # none merged the list (it only grew: main merged 6 rows' entries in one), and each
    # added one bounded write's rows (pgstatginindex counts the rows listed, not entries)
    assert all(after >= before for before, after in locked), locked
    assert max(after - before for before, after in locked) \
        <= WRITE_TERMS // (FIELDS * MAX_FIELD_TERMS), locked
    # merged outside the lock: nothing of the backlog left pending
    assert pending_entries(admin) == 0
    assert count(db, "SELECT count(*) FROM search_pending") == 0
    assert count(db, "SELECT count(*) FROM search_docs") == ROWS
    # searched by the GIN, merged or pending alike: every row, once
    for field in range(3):
        found = db.read_sync(lambda con, f=field: find_ids(
            con, ReviewQuery(q=f"field{f}row", q_in="all"), limit=50)[0])
        assert sorted(found) == sorted(r["id"] for r in rows)
    last = words(FIELD_WORDS, 6, skip=(3 * 5 + 1) * FIELD_WORDS)[MAX_FIELD_TERMS - 10]
    assert db.read_sync(lambda con: find_ids(con, ReviewQuery(q=last), limit=50)[0]) \
        == [rows[5]["id"]]


def test_an_indexer_write_is_sized_by_its_time_budget(db: Store) -> None:
    """Besides WRITE_TERMS, each write takes the rows the writes before it stored in
    `write_budget_s` (the first, one interaction, measures); with no time at all, every
    write holds the lock for one interaction."""
    rows = [item(k, f"hello ordinary{k}", "fine") for k in range(6)]
    assert ingest(db, rows) == len(rows)
    writes: list[list[str]] = []
    indexer = BackgroundIndexer(db, SearchIndexer(None), write_budget_s=0.0,
                                on_written=writes.append)
    assert asyncio.run(indexer.index_pending()) == len(rows)
    assert writes == [[r["id"]] for r in rows]
    found = db.read_sync(lambda con: find_ids(con, ReviewQuery(q="hello"), limit=50)[0])
    assert sorted(found) == sorted(r["id"] for r in rows)
