"""Migration 51: on Postgres, text search gets a tsvector per interaction (nothing to do on
DuckDB, which keeps its postings). Online: nothing here rewrites or scans `search_docs`.

`search_docs` gains `lexemes`, a plain nullable tsvector (adding it changes the catalog only:
the table's lock is held for an instant, not for a rewrite), and a trigger that sets it from
the row's `term_keys` and `term_fields` on every insert and every update of those, by
`tuneloop_search_vector`: each term (the analyzer's, storage.search_text, by its 64-bit key in
hex) is a lexeme per field it occurs in, the field a suffix: `s` system, `u` user, `a` answer
(storage.search_pg asks `q_in=conversation` as `(…u | …a)`). Fields as lexemes, not tsvector
weights: the GIN index knows no weights, so a weighted query rechecks every row it gives.

A trigger rather than a generated column: adding a generated column rewrites the table under
an exclusive lock (10.9 s at 100k rows, review r12z), and the trigger keeps the column right
for the writes of replicas still running the code from before this migration (their inserts
and edits name only the keys). The rows already there are filled afterwards, in batches, by
the search indexer, which then builds the GIN index CONCURRENTLY (storage.search_vectors):
until that index is valid, search reads the postings as before.

Its one moment of an exclusive lock on `search_docs` (the ALTER and the trigger) is asked with
a lock_timeout and retried: waiting behind a long reader, it would queue every statement on
search_docs (every replica's search, ingest, edit) behind itself for as long as that reader
runs; each try holds the queue for LOCK_WAIT_MS at most, then lets it go for a moment.

`search_terms` stays, and is written as before: replicas of the version before this one
search, edit and forget through it during a rolling deploy. A later migration drops it; run
that version only after every replica runs this one (README, "Upgrading replicas").
"""

from __future__ import annotations

import logging
import time

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.transaction import transaction
from tuneloop.errors import StorageError

log = logging.getLogger("tuneloop.storage")

VECTOR_FUNCTION = "tuneloop_search_vector"
TRIGGER_FUNCTION = "tuneloop_search_docs_lexemes"
FIELD_SUFFIXES = ((1, "s"), (2, "u"), (4, "a"))  # field bit (storage.search_index), suffix
LOCK_WAIT_MS = 1000  # one try at search_docs' exclusive lock
LOCK_TRIES = 120
LOCK_PAUSE_S = 0.5  # between tries: the statements queued behind the try run
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        return
    bits = ", ".join(str(bit) for bit, _ in FIELD_SUFFIXES)
    suffixes = ", ".join(f"'{suffix}'" for _, suffix in FIELD_SUFFIXES)
    # array_to_tsvector: the lexemes as they are, no tsvector text to parse (a third less
    # of the server's CPU per row than building that text, bench/pg_index_write.py)
    con.execute(f"""
        CREATE FUNCTION {VECTOR_FUNCTION}(keys bigint[], fields smallint[]) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT array_to_tsvector(ARRAY(
                SELECT to_hex(k) || suffix FROM unnest(keys, fields) AS t(k, f),
                    unnest(ARRAY[{bits}], ARRAY[{suffixes}]) AS s(bit, suffix)
                WHERE f & bit <> 0))
        $$""")
    con.execute(f"""
        CREATE FUNCTION {TRIGGER_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.lexemes := {VECTOR_FUNCTION}(NEW.term_keys, NEW.term_fields);
            RETURN NEW;
        END $$""")
    with_brief_lock(con, [
        "ALTER TABLE search_docs ADD COLUMN lexemes tsvector",
        "CREATE TRIGGER search_docs_lexemes BEFORE INSERT OR UPDATE OF term_keys, term_fields "
        f"ON search_docs FOR EACH ROW EXECUTE FUNCTION {TRIGGER_FUNCTION}()"])


def with_brief_lock(con: Connection, statements: list[str], *, migration: int = 51,
                    table: str = "search_docs") -> None:
    """Run `statements` (inside the migration's transaction, as a savepoint) under a
    lock_timeout, again after a pause while a long transaction keeps the lock from them.
    `migration` and `table`: for the messages (migration 53 uses it too)."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            with transaction(con):
                con.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
                for statement in statements:
                    con.execute(statement)
            return
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            log.warning("migration %d: %s is held by a long transaction (try %d of %d); "
                        "trying again", migration, table, attempt, LOCK_TRIES)
            time.sleep(LOCK_PAUSE_S)
    raise StorageError(f"migration {migration} could not lock {table} for an instant in "
                       f"{LOCK_TRIES} tries: a long transaction holds it (pg_stat_activity "
                       "shows which); end it, then start tuneloop again")
