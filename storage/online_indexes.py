"""Postgres: the indexes migrations ask for on tables that may already be big, built after the
migration with CREATE INDEX CONCURRENTLY (review r12x2 MED 2).

A plain CREATE INDEX holds a SHARE lock on its table until the migration's transaction ends:
every INSERT (every replica's ingest, old versions' too), UPDATE and DELETE of that table
waits for the whole build (1.6 s at 300,000 interactions for migration 52's two, minutes for
a store ten times that). So these migrations create nothing on Postgres; each index is listed
here with the migration that asks for it, and built CONCURRENTLY (a lock that lets reads and
writes go on) outside any transaction:

- by `migrate_store` right after the migration lock, for a small table (a new store: so a
  fresh store has its whole schema, storage/schema.postgres.sql, before it serves);
- otherwise by the search indexer of the leading replica (storage.search_queue), between its
  batches, as it finishes migration 51 (storage.search_vectors); and to the end by
  `tuneloop migrate-store` into Postgres.

Every step is idempotent and a session advisory lock lets one connection at a time do it: an
index already valid is left as it is (stores migrated before this change built them in the
migration); one a killed build left INVALID is dropped and built again; an index an entry
`replaces` is dropped (DROP INDEX CONCURRENTLY) only once its replacement is valid. Until an
index is there the queries it serves give the same answers, by another plan (a time range
through `interactions_by_time`, stats by a pass over the table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from storage.backend.dialect import dialect_of, table_exists
from storage.backend.pg_database import INDEX_BUILD_LOCK
from storage.db import Connection
from storage.migrations.m052_stats_index import FITS

log = logging.getLogger("tuneloop.storage")

STARTUP_ROWS = 10_000  # a table this small gets its indexes at startup (as a new store)


@dataclass(frozen=True)
class OnlineIndex:
    migration: int  # built once this migration is applied
    name: str
    table: str
    columns: str  # what follows `ON table`
    replaces: str | None = None  # dropped once this one is valid
    until: int | None = None  # not built once this migration (which drops it) is applied

    def create(self) -> str:
        return (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {self.name} "
                f"ON {self.table} {self.columns}")


INDEXES: tuple[OnlineIndex, ...] = (
    # migration 41: the review list's filters, forget (by user) and retention (by time)
    OnlineIndex(41, "interactions_by_user", "interactions", "(user_id)"),
    OnlineIndex(41, "interactions_by_session", "interactions", "(session_id)"),
    OnlineIndex(41, "interactions_by_time", "interactions", "(created_at)", until=50),
    # migration 46: forget and retention find an interaction's words by it (48 drops the
    # postings' one: a store past 48 never builds it)
    OnlineIndex(46, "search_terms_by_interaction", "search_terms", "(interaction_id)",
                until=48),
    OnlineIndex(46, "search_words_by_interaction", "search_words", "(interaction_id)"),
    # migration 50: the time index holds the id too, and replaces the one of created_at
    OnlineIndex(50, "interactions_by_time_id", "interactions", "(created_at, id)",
                replaces="interactions_by_time"),
    # migration 52: the Stats page's covering index, and the one of the rows too wide for it
    OnlineIndex(52, "interactions_stats", "interactions",
                "(created_at) INCLUDE (endpoint, model, prompt_tokens, completion_tokens, "
                f"tags) WHERE {FITS}"),
    OnlineIndex(52, "interactions_stats_wide", "interactions", f"(created_at) WHERE NOT {FITS}"),
    # migration 56: a key's feedback on an interaction is counted before each new entry
    OnlineIndex(56, "feedback_by_interaction", "feedback", "(interaction_id)"),
)


def index_valid(con: Connection, name: str) -> bool | None:
    """True: built and valid; False: there but INVALID (a build killed part of the way);
    None: not there."""
    rows = con.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = "
                       "to_regclass(?)", [name]).fetchall()
    return bool(rows[0][0]) if rows else None


def _applied(con: Connection) -> set[int]:
    if not table_exists(con, "_migrations"):
        return set()
    return {row[0] for row in con.execute("SELECT version FROM _migrations").fetchall()}


def due(con: Connection) -> list[OnlineIndex]:
    """The indexes to build (or whose replaced index is still to drop)."""
    if dialect_of(con).name != "postgres":
        return []
    applied = _applied(con)
    return [ix for ix in INDEXES if ix.migration in applied
            and (ix.until is None or ix.until not in applied)
            and (index_valid(con, ix.name) is not True
                 or (ix.replaces is not None and index_valid(con, ix.replaces) is not None))]


def _small(con: Connection, indexes: list[OnlineIndex], rows: int) -> bool:
    return all(con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT ?) t",
                            [rows + 1]).fetchall()[0][0] <= rows
               for table in {ix.table for ix in indexes})


def build_indexes(con: Connection, *, small_only: bool = False,
                  startup_rows: int = STARTUP_ROWS) -> bool:
    """Build the due indexes (`con` outside any transaction: CREATE INDEX CONCURRENTLY).
    `small_only`: only when their tables hold up to `startup_rows` rows (a replica's start).
    Answers whether none is left due (False also when another connection is at it)."""
    todo = due(con)
    if not todo:
        return True
    if small_only and not _small(con, todo, startup_rows):
        return False
    if not con.execute("SELECT pg_try_advisory_lock(?)", [INDEX_BUILD_LOCK]).fetchall()[0][0]:
        return False
    try:
        for ix in due(con):  # again, under the lock: another connection may have built some
            state = index_valid(con, ix.name)
            if state is False:  # left INVALID by a build killed part of the way
                log.warning("dropping the invalid index %s (a build that did not finish)",
                            ix.name)
                con.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {ix.name}")
            if state is not True:
                log.info("building the index %s on %s (concurrently)", ix.name, ix.table)
                con.execute(ix.create())
            if ix.replaces is not None:
                con.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {ix.replaces}")
        return not due(con)
    finally:
        con.execute("SELECT pg_advisory_unlock(?)", [INDEX_BUILD_LOCK])
