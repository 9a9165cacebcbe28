"""Postgres: finishing migration 51 online. The migration adds `search_docs.lexemes` and its
trigger; the rows indexed before it are filled here in batches, then the GIN index is built
CONCURRENTLY (no lock that stops reads or writes of search_docs), then ANALYZE. Search asks
that index (storage.search_pg) once it is valid (`vectors_ready`), and only the postings
until then.

Run by the search indexer of the leading replica (storage.search_queue) a batch at a time,
and to the end by `tuneloop migrate-store` into Postgres; a session advisory lock lets one
connection at a time do it, and each step is idempotent, so a crash or a restart goes on.
"""

from __future__ import annotations

import logging

from storage.backend.dialect import dialect_of, table_exists
from storage.db import Connection
from storage.migrations.m051_search_vectors import VECTOR_FUNCTION

log = logging.getLogger("tuneloop.search")

MIGRATION = 51  # the migration finished here (storage.migrations)
INDEX = "search_docs_lexemes"
BUILD_LOCK = 0x74756E65_6C6F6F70 + 4  # beside storage.backend.pg_database's advisory keys
FILL_CHUNK_ROWS = 2000


def vectors_ready(con: Connection) -> bool:
    """Search may read the tsvector: its GIN index is built and valid (it is built only
    after every row's lexemes are filled)."""
    if dialect_of(con).name != "postgres":
        return False
    rows = con.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = "
                       f"to_regclass('{INDEX}')").fetchall()
    return bool(rows and rows[0][0])


def fill_chunk(con: Connection, after: str, rows: int = FILL_CHUNK_ROWS) -> str | None:
    """Fill the lexemes of up to `rows` rows after `after` (by id) that have none, in one
    statement (its own transaction on an autocommit connection: row locks only, briefly).
    Answers the last id looked at, None when none is left."""
    found = con.execute(
        f"WITH chunk AS (SELECT interaction_id FROM search_docs WHERE interaction_id > ? "
        f"ORDER BY interaction_id LIMIT ?), filled AS (UPDATE search_docs d SET lexemes = "
        f"{VECTOR_FUNCTION}(d.term_keys, d.term_fields) FROM chunk c WHERE "
        "d.interaction_id = c.interaction_id AND d.lexemes IS NULL RETURNING 1) "
        "SELECT (SELECT max(interaction_id) FROM chunk), (SELECT count(*) FROM filled)",
        [after, rows]).fetchall()
    return found[0][0]


def build_vectors(con: Connection, *, start: str = "", max_chunks: int | None = None,
                  chunk_rows: int = FILL_CHUNK_ROWS) -> tuple[bool, str]:
    """Take the vectors forward from the id `start`: fill up to `max_chunks` chunks (None:
    all), then, when all are filled, build the index and ANALYZE. `con` must be outside any
    transaction (CREATE INDEX CONCURRENTLY). Answers whether the vectors are ready (False
    also when another connection is at it) and the id to start from next time."""
    if dialect_of(con).name != "postgres" or not table_exists(con, "search_docs"):
        return False, start
    if vectors_ready(con):
        return True, start
    if not con.execute("SELECT pg_try_advisory_lock(?)", [BUILD_LOCK]).fetchall()[0][0]:
        return False, start
    try:
        return _build(con, start, max_chunks, chunk_rows)
    finally:
        con.execute("SELECT pg_advisory_unlock(?)", [BUILD_LOCK])


def _build(con: Connection, start: str, max_chunks: int | None,
           chunk_rows: int) -> tuple[bool, str]:
    after: str | None = start
    done = 0
    while after is not None:
        if max_chunks is not None and done >= max_chunks:
            return False, after
        after = fill_chunk(con, after, chunk_rows)
        done += 1
    # rows written since the migration have lexemes from its trigger; one look for any left
    # (a walk that began after a restart part of the way)
    if con.execute("SELECT 1 FROM search_docs WHERE lexemes IS NULL LIMIT 1").fetchall():
        return False, ""
    con.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")  # an invalid one, from a crash
    log.info("search: building the GIN index of search_docs.lexemes (concurrently)")
    con.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON search_docs USING gin (lexemes)")
    con.execute("ANALYZE search_docs")
    return vectors_ready(con), ""


def clean_pending(con: Connection) -> int | None:
    """Postgres: merge the GIN index's pending list into the index, on an autocommit
    connection outside any write transaction (no WRITE_LOCK held); None when there is no
    valid index (DuckDB, or before migration 51 is finished).

    A GIN index with fastupdate (the default) first appends new entries to a pending list,
    and the insert that makes that list outgrow gin_pending_list_limit (4 MB) merges the
    whole list into the index itself. That insert is an indexer write holding the
    deployment's write lock: at 300k interactions each such merge took 2.4-2.6 s, and every
    replica's reviews, claims and ingest waited behind it (review r12y MED 3; computing the
    lexemes themselves is ~25 ms for a row at the caps). The indexer calls this after each
    of its writes, so the list never holds more than about one write's entries and no
    locked insert finds it full. Inserts never wait for a merge that runs here (Postgres
    skips the merge of an insert while another runs), so nothing waits for this but the
    indexer. Answers the pages merged."""
    if dialect_of(con).name != "postgres":
        return None
    rows = con.execute(
        "SELECT gin_clean_pending_list(i.indexrelid) FROM pg_index i WHERE i.indexrelid = "
        f"to_regclass('{INDEX}') AND i.indisvalid").fetchall()
    return int(rows[0][0]) if rows else None
