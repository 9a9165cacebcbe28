"""Migrations that index a big table on Postgres don't stop ingest (review r12x2 MED 2): they
build nothing in their transaction; storage.online_indexes builds the indexes CONCURRENTLY
afterwards (at a replica's start for a small store, else by the leading replica's search
indexer), idempotently, rebuilding one a killed build left INVALID.

The probe: while migration N's transaction is still open (its apply has run, its commit not
yet), another connection inserts into the indexed table with a 3 s lock_timeout. A plain
CREATE INDEX in the migration holds a SHARE lock to the commit: the insert then times out."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.migrations import MIGRATIONS
from storage.migrations.runner import Migration
from storage.online_indexes import INDEXES, build_indexes, due, index_valid
from storage.search_index import SearchIndexer
from storage.search_queue import BackgroundIndexer
from storage.stats import review_stats
from storage.store import migrate_store, open_store
from tests.test_search_languages import opened

ROWS = 3000
FILL = {
    "interactions": "INSERT INTO interactions (id, created_at, endpoint, model, tags, "
                    "prompt_tokens, completion_tokens) SELECT 'r' || lpad(g::text, 8, '0'), "
                    "timestamptz '2026-01-01' + g * interval '1 minute', 'chat.completions', "
                    "'m' || (g % 3), ARRAY['t' || (g % 2)], g % 50, g % 70 "
                    "FROM generate_series(1, %s) g",
    "search_words": "INSERT INTO search_words SELECT 'w' || g, g, 'r' || g "
                    "FROM generate_series(1, %s) g",
}
PROBE = {
    "interactions": "INSERT INTO interactions (id, created_at, endpoint) "
                    "VALUES ('probe', now(), 'chat.completions')",
    "search_words": "INSERT INTO search_words VALUES ('probeword', 1, 'probe')",
}


def fill(url: str, table: str, rows: int = ROWS) -> None:
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute(FILL[table].replace("%s", str(int(rows))).encode())


def names(con: Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT indexname FROM pg_indexes WHERE schemaname = "
                                      "'public'").fetchall()}


@pytest.mark.parametrize(("version", "table"), [(41, "interactions"), (46, "search_words"),
                                                (50, "interactions"), (52, "interactions")])
def test_a_migration_indexing_a_big_table_lets_inserts_through(
        pg_url: str, version: int, table: str) -> None:
    with opened(pg_url, up_to=version - 1):
        pass
    fill(pg_url, table)
    probed: list[str] = []

    def probing(migration: Migration) -> Migration:
        def apply(con: Connection) -> None:
            migration.apply(con)
            # the migration's transaction is open: what it locked, it holds
            with psycopg.connect(pg_url, autocommit=True) as other:
                other.execute("SET lock_timeout = '3s'")
                try:
                    other.execute(PROBE[table].encode())
                    probed.append("inserted")
                except psycopg.errors.LockNotAvailable as exc:
                    probed.append(f"blocked: {exc}")
        return Migration(migration.version, migration.name, apply)

    probed_list = tuple(probing(m) if m.version == version else m for m in MIGRATIONS)
    with opened(pg_url, up_to=version, migrations=probed_list) as con:
        assert probed == ["inserted"]
        # the indexes come afterwards, concurrently, and then are all there and valid
        assert due(con)
        assert build_indexes(con) and not due(con)
        for ix in INDEXES:
            if ix.migration <= version and (ix.until is None or ix.until > version):
                assert index_valid(con, ix.name) is True, ix.name


def test_a_new_store_is_whole_after_migrate_store(pg_url: str) -> None:
    db = open_store(pg_url)
    try:
        migrate_store(db)
        assert db.read_sync(due) == []
        present = db.read_sync(names)
    finally:
        db.close()
    assert {"interactions_by_user", "interactions_by_session", "interactions_by_time_id",
            "search_words_by_interaction", "interactions_stats",
            "interactions_stats_wide", "feedback_by_interaction"} <= present
    assert not {"interactions_by_time", "search_terms_by_interaction"} & present


def test_a_big_store_is_indexed_by_the_leading_replicas_indexer_and_counts_the_same(
        pg_url: str) -> None:
    """Past `startup_rows` the replica's start leaves the build to the search indexer; stats
    answer the same before (a pass over the table) and after (the covering index)."""
    with opened(pg_url, up_to=51) as con:
        build_indexes(con)  # a store at 51 has the indexes of the migrations before
    fill(pg_url, "interactions")

    async def run() -> tuple[Any, list[bool], Any]:
        db = open_store(pg_url)
        try:
            migrate_store(db, startup_rows=100)  # 52: its indexes not built at start (too big)
            assert [ix.name for ix in await db.read(due)] == [  # (56's waits with them)
                "interactions_stats", "interactions_stats_wide", "feedback_by_interaction"]
            before = await db.read(review_stats)
            indexer = BackgroundIndexer(db, SearchIndexer(None))
            rounds = [await indexer.finish_indexes()]
            after = await db.read(review_stats)
            rounds.append(await db.read(lambda con: not due(con)))
            return before, rounds, after
        finally:
            db.close()

    before, rounds, after = asyncio.run(run())
    assert rounds == [True, True]
    assert before == after
    assert before["totals"]["total"] + before["totals"]["not_reviewable"] == ROWS


def test_an_invalid_index_left_by_a_killed_build_is_rebuilt(pg_url: str) -> None:
    with opened(pg_url) as con:
        build_indexes(con)
        fill(pg_url, "interactions")
        con.execute("DROP INDEX interactions_stats")
        # a concurrent build that fails part of the way leaves its index, INVALID
        with pytest.raises(psycopg.errors.UniqueViolation):
            con.execute("CREATE UNIQUE INDEX CONCURRENTLY interactions_stats "
                        "ON interactions (model)")
        assert index_valid(con, "interactions_stats") is False
        assert [ix.name for ix in due(con)] == ["interactions_stats"]
        assert build_indexes(con)
        assert index_valid(con, "interactions_stats") is True
        definition = con.execute("SELECT pg_get_indexdef(to_regclass('interactions_stats'))"
                                 ).fetchall()[0][0]
        assert "INCLUDE (endpoint, model, prompt_tokens, completion_tokens, tags)" in definition
        assert "UNIQUE" not in definition


def test_a_store_migrated_before_keeps_its_indexes(pg_url: str) -> None:
    """A store whose migrations built the indexes (before this change): nothing is due, and
    nothing is rebuilt."""
    with opened(pg_url) as con:
        assert isinstance(con, PgConnection)
        build_indexes(con)
        oids = con.execute("SELECT indexrelid::regclass::text, indexrelid FROM pg_index "
                           "ORDER BY 1").fetchall()
        assert due(con) == [] and build_indexes(con)
        assert con.execute("SELECT indexrelid::regclass::text, indexrelid FROM pg_index "
                           "ORDER BY 1").fetchall() == oids
