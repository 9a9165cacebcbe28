"""A rolling deploy across migration 51 on Postgres (review r12z HIGH 2): the migration
neither rewrites nor holds search_docs (its tsvector is filled in batches afterwards and its
GIN index built concurrently), and the replicas still running the version before it go on
searching, editing and forgetting through the postings, which this version keeps writing.

The old replica is its statements, as version 50 (main at a995f8f: its search, edit and forget
of the postings as at cd19f3d^1) sends them."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from storage.backend.dialect import table_exists
from storage.backend.pg_connection import PgConnection
from storage.db import Connection, connect
from storage.governance import forget_interactions
from storage.migrations import MIGRATIONS, migrate
from storage.migrations.runner import run
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.search_index import SearchIndexer, forward_index
from storage.search_queue import BackgroundIndexer
from storage.search_text import stems, term_key
from storage.search_vectors import MIGRATION, build_vectors, vectors_ready
from storage.store import migrate_store, open_store
from tests.test_search_languages import TEXTS, ids, item, load, opened

# version 50's search: the postings of a term, newest first (its storage.search)
OLD_SEARCH = ("SELECT interaction_id FROM search_terms WHERE term_key = ? AND (fields & ?) <> 0 "
              "AND interaction_id >= ? ORDER BY interaction_id DESC LIMIT ?")
# version 50's edit: the merged keys into search_docs, the new ones as postings (index_edit)
OLD_EDIT = ("UPDATE search_docs SET term_keys = ?::BIGINT[], term_fields = ? "
            "WHERE interaction_id = ?")
OLD_POSTING = "INSERT INTO search_terms (term_key, interaction_id, fields) VALUES (?, ?, ?)"
# version 50's indexer writes search_docs by its three columns
OLD_DOC = "INSERT INTO search_docs (interaction_id, term_keys, term_fields) VALUES (?, ?, ?)"
# version 50's forget: the postings by the keys in search_docs, then the row (governance)
OLD_FORGET = ("DELETE FROM search_terms t USING (SELECT d.interaction_id, k.term_key FROM "
              "search_docs d CROSS JOIN LATERAL unnest(d.term_keys) AS k(term_key) "
              "WHERE d.interaction_id = ANY(?::VARCHAR[])) p "
              "WHERE t.term_key = p.term_key AND t.interaction_id = p.interaction_id")
CONVERSATION = 2 | 4


def key(word: str) -> int:
    return term_key(stems([word])[0])


def old_search(con: Connection, word: str) -> list[str]:
    return [r[0] for r in con.execute(OLD_SEARCH, [key(word), CONVERSATION, "", 100]
                                      ).fetchall()]


def new_search(con: Connection, q: str) -> list[str]:
    return find_ids(con, ReviewQuery(q=q), limit=100)[0]


def old_index(con: Connection, k: int, user: str, answer: str) -> str:
    """What version 50's indexer writes for an interaction (the interaction itself too)."""
    row = item(k, user, answer)
    insert_interactions(con, to_arrow([row]))
    docs = forward_index([row["id"]], [("", user, answer)]).docs.to_pylist()[0]
    con.execute(OLD_DOC, [row["id"], docs["term_keys"], docs["term_fields"]])
    for term, fields in zip(docs["term_keys"], docs["term_fields"], strict=True):
        con.execute(OLD_POSTING, [term, row["id"], fields])
    return str(row["id"])


def relation_file(con: Connection) -> Any:
    return con.execute("SELECT pg_relation_filenode('search_docs')").fetchall()[0][0]


def test_migration_51_keeps_search_docs_in_place_and_builds_its_index_afterwards(
        pg_url: str) -> None:
    rows = [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)]
    with opened(pg_url, up_to=50) as con:
        load(con, rows)
        before = relation_file(con)
    with opened(pg_url) as con:  # migration 51 alone, as at a replica's start
        assert relation_file(con) == before  # no rewrite: the lock was a catalog change's
        assert not vectors_ready(con)
        assert con.execute("SELECT count(*) FROM search_docs WHERE lexemes IS NULL"
                           ).fetchall() == [(len(rows),)]
        assert con.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'search_docs' "
                           "AND indexdef LIKE '%gin%'").fetchall() == [(0,)]
        # meanwhile search reads the postings, and finds what it found
        assert new_search(con, "refund") == ids(4, 5, 6, 9)
        # the indexer fills in batches; an old replica's write transaction open meanwhile
        # does not stop it (row locks only)
        writer = psycopg.connect(pg_url, autocommit=False)
        try:
            writer.execute("INSERT INTO search_docs (interaction_id, term_keys, term_fields) "
                           "VALUES ('zz', '{1}', '{2}')")
            con.execute("SET lock_timeout = '2s'")
            ready, start = build_vectors(con, max_chunks=1, chunk_rows=5)
            assert not ready and start == ids(4)[0]
            writer.commit()
        finally:
            writer.close()
        while not ready:
            ready, start = build_vectors(con, start=start, max_chunks=1, chunk_rows=5)
        assert vectors_ready(con)
        assert con.execute("SELECT count(*) FROM search_docs WHERE lexemes IS NULL"
                           ).fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'search_docs' "
                           "AND attname = 'lexemes'").fetchall() == [(1,)]  # ANALYZEd
        assert new_search(con, "refund") == ids(4, 5, 6, 9)
        assert new_search(con, "パスワード") == ids(0)
        assert new_search(con, "refu*") == ids(4, 5, 6, 7, 9)


def test_an_old_replica_searches_edits_and_forgets_after_migration_51(pg_url: str) -> None:
    rows = [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)]
    with opened(pg_url, up_to=50) as con:
        load(con, rows)
    with opened(pg_url) as con:
        build_vectors(con)
        assert vectors_ready(con) and table_exists(con, "search_terms")
        # this version's writes keep the postings the old replicas read
        load(con, [item(40, "a refund for my parcel", "sure")])
        assert old_search(con, "refund") == ids(40, 4, 5, 6, 9)
        # the old replica indexes a row: its search_docs row gets lexemes from the trigger
        new_id = old_index(con, 41, "where is the zeppelin refund", "on its way")
        assert old_search(con, "zeppelin") == [new_id]
        assert new_search(con, "zeppelin") == [new_id]
        # the old replica edits an answer: the keys merged, the tsvector follows them
        edited = ids(9)[0]
        keys, fields = con.execute("SELECT term_keys, term_fields FROM search_docs "
                                   "WHERE interaction_id = ?", [edited]).fetchall()[0]
        con.execute(OLD_EDIT, [[*keys, key("unicorn")], [*fields, 4], edited])
        con.execute(OLD_POSTING, [key("unicorn"), edited, 4])
        assert old_search(con, "unicorn") == [edited]
        assert new_search(con, "unicorn") == [edited]
        # the old replica forgets: its statements run, and neither search finds the row
        forgotten = ids(4)[0]
        con.execute("BEGIN")
        con.execute(OLD_FORGET, [[forgotten]])
        con.execute("DELETE FROM search_docs WHERE interaction_id = ?", [forgotten])
        con.execute("COMMIT")
        assert old_search(con, "refund") == ids(40, 41, 5, 6, 9)
        assert new_search(con, "refund") == ids(40, 41, 5, 6, 9)
        # and this version's forget leaves no posting behind for the old replicas
        forget_interactions(con, ids(5))
        assert old_search(con, "refund") == ids(40, 41, 6, 9)
        assert new_search(con, "refund") == ids(40, 41, 6, 9)


def test_the_leading_replicas_indexer_finishes_migration_51_in_rounds(pg_url: str) -> None:
    """A store migrated without finishing (a replica's startup finishes only a small one) is
    finished by the search indexer, a round at a time; search reads the vectors after."""
    rows = [item(k, f"hello number {k}", "sure") for k in range(200)]
    with opened(pg_url, up_to=50) as con:
        load(con, rows)
    with opened(pg_url):  # migration 51 alone
        pass

    async def run() -> list[bool]:
        db = open_store(pg_url)
        try:
            indexer = BackgroundIndexer(db, SearchIndexer(None))
            rounds = [await db.read(vectors_ready)]
            while not rounds[-1] and len(rounds) < 50:
                rounds.append(await indexer.finish_vectors())
            return rounds
        finally:
            db.close()

    rounds = asyncio.run(run())
    assert rounds[0] is False and rounds[-1] is True
    with opened(pg_url) as con:
        assert vectors_ready(con)
        assert new_search(con, "hello") == ids(*range(100, 200))


def test_migration_51_waiting_for_a_long_reader_lets_the_others_through(pg_url: str) -> None:
    """Its exclusive lock is asked with a lock_timeout and retried: a statement on search_docs
    issued meanwhile waits a try at most (1 s), not for as long as the long reader runs."""
    with opened(pg_url, up_to=50) as con:
        load(con, [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)])
    long_reader = psycopg.connect(pg_url, autocommit=True)
    long_reader.execute("BEGIN")
    long_reader.execute("SELECT count(*) FROM search_docs")  # holds its lock to COMMIT
    done = threading.Event()

    def start_a_replica() -> None:
        with opened(pg_url):
            done.set()
    replica = threading.Thread(target=start_a_replica)
    replica.start()
    time.sleep(0.3)  # the migration is asking for its lock
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SET statement_timeout = 2500")  # before: queued to the reader's end
        assert other.execute("SELECT count(*) FROM search_docs").fetchall() == [(len(TEXTS),)]
        time.sleep(1.5)
        assert other.execute("SELECT count(*) FROM search_docs").fetchall() == [(len(TEXTS),)]
    assert not done.is_set()
    long_reader.execute("COMMIT")
    long_reader.close()
    replica.join(timeout=30)
    assert done.is_set()
    with opened(pg_url) as con:
        assert 51 in {r[0] for r in con.execute("SELECT version FROM _migrations").fetchall()}


def test_migrate_store_up_to_50_leaves_the_store_as_version_50_has_it(pg_url: str) -> None:
    """`migrate_store(up_to=50)` (a store as main's version 50 leaves it, the start of the
    upgrade tests and benches) stops before the search vectors: it finished them at 50, when
    they were migration 50, and failed on a store without their function and column."""
    assert {m.name: m.version for m in MIGRATIONS}["search_vectors"] == MIGRATION == 51
    db = open_store(pg_url)
    try:
        assert migrate_store(db, up_to=50)[-1] == 50
        assert db.read_sync(lambda con: con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'search_docs' "
            "AND column_name = 'lexemes'").fetchall()) == [(0,)]
        assert migrate_store(db)[0] == 51  # then the later ones (52, stats_index)
        assert db.read_sync(vectors_ready)  # a small store: finished at its start
    finally:
        db.close()


def test_a_store_of_main_with_migration_52_before_51_gets_51(pg_url: str,
                                                               tmp_path: Path) -> None:
    """Main shipped 52 (stats_index) while 51 (these search vectors) waited on its branch: a
    store of that version has 50 and 52; this one applies 51 to it, on both stores, and
    search then reads the vectors (Postgres)."""
    without_51 = [m for m in MIGRATIONS if m.version != MIGRATION]
    duck = connect(tmp_path / "s.duckdb")
    try:
        run(duck, without_51)
        assert migrate(duck) == [MIGRATION]
    finally:
        duck.close()
    raw = psycopg.connect(pg_url, autocommit=True, options="-c timezone=UTC")
    try:
        con = PgConnection(raw, ddl=True)
        run(con, without_51)
        load(con, [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)])
        assert migrate(con) == [MIGRATION]
        assert build_vectors(con)[0] and vectors_ready(con)
        assert new_search(con, "refund") == ids(4, 5, 6, 9)
    finally:
        raw.close()
