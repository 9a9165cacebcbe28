"""The term index behind text search (`q`), kept without DuckDB's fts extension.

Terms come from `storage.search_text` (normalized words, English stems, and character grams
of scripts written without spaces). Each interaction's text is indexed in three fields, so a
search can leave out the system prompt every item shares, or look at the answers only:

- system: system and developer messages (and a response's instructions);
- user: user, tool and function messages (what the app sent besides its instructions);
- answer: assistant messages (the answer, earlier assistant turns, tool calls, alternatives).

Three tables (schema: migration 35), written by the background indexer (storage.search_queue)
from the list of interactions ingested and not yet indexed (`search_pending`, migration 46:
`queue_for_index` adds to it in the ingest transaction; `store_claimed` takes from it in the
transaction that writes the terms), or by `index_batch` in the caller's transaction:

- `search_terms` (term_key BIGINT, interaction_id, fields UTINYINT): one row per distinct term
  of an interaction, with the fields it occurs in as bits (FIELD_BITS). Rows arrive in ingest
  order, which is id order, so the newest postings of a term are found by a Top-N scan that
  stops early, and a rare term costs one scan of a column of integers.
- `search_docs` (interaction_id PRIMARY KEY, term_keys BIGINT[], term_fields UTINYINT[]): the
  same per interaction, to check the other terms of a query on a handful of candidates. Its
  primary key also makes indexing idempotent when a spool segment is replayed.
- `search_words` (word PRIMARY KEY, term_key, interaction_id): the words
  seen (3 to 32 characters, with a letter), each with the key of its term and the first
  interaction it was seen in, for prefix queries (`refu*`). Forgetting that interaction
  (`tuneloop forget`, retention) removes the word with it: no word outlives every interaction
  it came from, and a word seen again later returns.

Edited message lists add their new terms (search finds an item by any of its revisions).

What indexing an interaction writes, and the caps on it (per field, per interaction), is
computed by storage.search_forward, the one way in for every path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from storage.backend import CONSTRAINT_ERRORS, staged
from storage.backend.dialect import dialect_of, table_exists
from storage.backend.pg_connection import PgConnection
from storage.compute_worker import ComputeWorker
from storage.db import Connection
from storage.messages import (
    REVIEWABLE_ENDPOINTS,
    Message,
    is_reviewable,
    message_text,
    messages_of,
)
from storage.records import CLIENT_KEY
from storage.search_forward import TERMS_SCHEMA, Fields, ForwardIndex, forward_index
from storage.transaction import transaction

log = logging.getLogger("tuneloop.search")
SYSTEM_ROLES = ("system", "developer")


def message_fields(messages: Sequence[Message]) -> Fields:
    """The (system, user, answer) text of a message list."""
    pieces: tuple[list[str], list[str], list[str]] = ([], [], [])
    for message in messages:
        role = message.get("role")
        slot = 0 if role in SYSTEM_ROLES else 2 if role == "assistant" else 1
        text = message_text([message])
        if text:
            pieces[slot].append(text)
    return "\n".join(pieces[0]), "\n".join(pieces[1]), "\n".join(pieces[2])


def interaction_fields(endpoint: str | None, request: Any, response: Any) -> Fields | None:
    """The searchable text of a logged interaction by field (JSON given as text or parsed)."""
    if not is_reviewable(endpoint):
        return None
    assert endpoint is not None
    messages, alternatives = messages_of(endpoint, _parsed(request), _parsed(response))
    return message_fields(messages + alternatives)


def interaction_text(endpoint: str | None, request: Any, response: Any) -> str | None:
    """All searchable text of a logged interaction, every field."""
    fields = interaction_fields(endpoint, request, response)
    return None if fields is None else "\n".join(f for f in fields if f)


def _parsed(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _insert(con: Connection, table: str, rows: pa.Table, suffix: str = "") -> list[Any]:
    if rows.num_rows == 0:
        return []
    view = f"_{table}_batch"
    columns = ", ".join(rows.schema.names)
    ignore = "ON CONFLICT DO NOTHING" if suffix or table == "search_words" else ""
    with staged(con, view, rows, like=table):
        result = con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view} "
                             f"{ignore} {suffix}").fetchall()
    return [r[0] for r in result] if suffix else []


def _copy_all(con: Connection, table: str, rows: pa.Table) -> bool:
    """Postgres: COPY the rows straight into the table, in a savepoint (a third of a staged
    INSERT ... SELECT's time); False on DuckDB, or when a key is there already (the caller
    then takes the path that skips those)."""
    if not isinstance(con, PgConnection):
        return False
    con.execute("BEGIN")
    try:
        con.copy_rows(table, rows)
    except CONSTRAINT_ERRORS:
        con.execute("ROLLBACK")
        return False
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return True


def store_forward_index(con: Connection, forward: ForwardIndex) -> None:
    """Write a forward index into the tables, skipping interactions already indexed (a
    replayed spool segment)."""
    docs = forward.docs
    if not _copy_all(con, "search_docs", docs):
        fresh = _insert(con, "search_docs", docs, "RETURNING interaction_id")
        if len(fresh) < docs.num_rows:
            docs = docs.filter(pc.is_in(docs["interaction_id"],
                                        value_set=pa.array(fresh, pa.string())))
    keys = docs["term_keys"].combine_chunks()
    postings = pa.table(
        [keys.flatten(), docs["interaction_id"].take(pc.list_parent_indices(keys)),
         docs["term_fields"].combine_chunks().flatten()], schema=TERMS_SCHEMA)
    if isinstance(con, PgConnection):  # no key to conflict on: COPY as they are
        con.copy_rows("search_terms", postings)
    else:
        _insert(con, "search_terms", postings)
    _insert(con, "search_words", forward.words)


def _fields(row: dict[str, Any]) -> Fields:
    try:
        return interaction_fields(row["endpoint"], row["request"], row["response"]) \
            or ("", "", "")
    except Exception:  # a record we can't read must not stop ingest; it is just not searchable
        log.exception("could not index the text of interaction %s", row["id"])
        return "", "", ""


BATCH_COLUMNS = ["id", "endpoint", "request", "response"]


def batch_forward_index(batch: pa.Table) -> ForwardIndex:
    """The forward index of the reviewable interactions of an ingest batch (columns
    BATCH_COLUMNS at least). Pure: the index worker runs it."""
    rows = [row for row in batch.select(BATCH_COLUMNS).to_pylist()
            if is_reviewable(row["endpoint"])]
    return forward_index([row["id"] for row in rows], [_fields(row) for row in rows])


def index_batch(con: Connection, batch: pa.Table) -> None:
    """IngestHook: index the reviewable interactions of a freshly inserted batch, in this
    process (the server's hook is a SearchIndexer, which uses the worker process)."""
    store_forward_index(con, batch_forward_index(batch))


def index_edit(con: Connection, interaction_id: str, messages: list[dict[str, Any]]) -> None:
    """Add the terms (or fields of terms) of an edited message list that the interaction was
    not indexed with."""
    forward = forward_index([interaction_id], [message_fields(messages)])
    index_pending_now(con, [interaction_id])  # the logged text first, when not indexed yet
    rows = con.execute("SELECT term_keys, term_fields FROM search_docs WHERE interaction_id = ?",
                       [interaction_id]).fetchall()
    if not rows:
        store_forward_index(con, forward)
        return
    known = dict(zip(rows[0][0], rows[0][1], strict=True))
    edited = forward.docs.to_pylist()[0]
    added: dict[int, int] = {}
    for key, bits in zip(edited["term_keys"], edited["term_fields"], strict=True):
        new_bits = bits & ~known.get(key, 0)
        if new_bits:
            added[key] = new_bits
            known[key] = known.get(key, 0) | bits
    if added:
        con.execute("UPDATE search_docs SET term_keys = ?::BIGINT[], "
                    "term_fields = ? WHERE interaction_id = ?",
                    [list(known), list(known.values()), interaction_id])
        # postings only for the new bits (a term may then have two rows: search dedupes)
        _insert(con, "search_terms", pa.table(
            [list(added), [interaction_id] * len(added), list(added.values())],
            schema=TERMS_SCHEMA))
    _insert(con, "search_words", forward.words)


PENDING = "search_pending"
POSTINGS = "search_terms"
DELETE_CHUNK = 200  # interactions whose postings one statement deletes


def delete_postings(con: Connection, ids: Sequence[str]) -> int:
    """Postgres: delete the postings of the interactions `ids`, found by their keys in
    `search_docs` (an edit's keys are merged there too) through the (term_key,
    interaction_id) index: search_terms has no index by interaction (migration 48). In
    chunks: for thousands of ids at once the planner, which guesses 10 keys an array, chose
    a scan of the whole table (9 s for 10,000 of 100,000 interactions, against ~1 ms a
    forgotten interaction by the index). Answers the rows deleted."""
    deleted = 0
    for start in range(0, len(ids), DELETE_CHUNK):
        cursor = con.execute(
            f"DELETE FROM {POSTINGS} t USING (SELECT d.interaction_id, k.term_key FROM "
            "search_docs d CROSS JOIN LATERAL unnest(d.term_keys) AS k(term_key) "
            "WHERE d.interaction_id = ANY(?::VARCHAR[])) p "
            "WHERE t.term_key = p.term_key AND t.interaction_id = p.interaction_id",
            [list(ids[start:start + DELETE_CHUNK])])
        deleted += dialect_of(con).changed_rows(cursor)
    return deleted


def text_bytes(batch: pa.Table) -> pa.Array:
    """Per row of an ingest batch, its request's and response's text in bytes (as stored:
    the JSON text the batch inserts), what `search_pending.text_bytes` holds."""
    sizes = [pc.fill_null(pc.binary_length(batch[name]), 0).cast(pa.int64())
             for name in ("request", "response")]
    return pc.add(*sizes).combine_chunks()


def client_keys(batch: pa.Table) -> pa.Array:
    """Per row of an ingest batch, the client key its record came with (storage.records
    CLIENT_KEY; null without one), what `search_pending.client_key` holds."""
    if CLIENT_KEY not in batch.column_names:
        return pa.nulls(batch.num_rows, pa.string())
    return batch[CLIENT_KEY].combine_chunks()


def queue_for_index(con: Connection, batch: pa.Table) -> None:
    """List the reviewable interactions of a batch just inserted as not yet indexed (in the
    ingest transaction: an interaction is in the index or on the list, never neither), each
    with the size of its text (`text_bytes`, migration 53: counted here, from the values the
    batch holds, so search's tail and the indexer never size a row by reading it) and the
    client key that sent it (`client_key`, migration 55: the indexer's lanes,
    storage.search_fair)."""
    reviewable = pc.fill_null(pc.is_in(batch["endpoint"],
                                       value_set=pa.array(REVIEWABLE_ENDPOINTS)), False)
    listed = pa.table({"interaction_id": batch["id"], "text_bytes": text_bytes(batch),
                       "client_key": client_keys(batch)}).filter(reviewable)
    if listed.num_rows == 0 or not table_exists(con, PENDING):
        return
    if isinstance(con, PgConnection):  # COPY (in a savepoint): a third of INSERT's time
        con.execute("BEGIN")
        try:
            con.copy_rows(PENDING, listed)
            con.execute("COMMIT")
            return
        except CONSTRAINT_ERRORS:  # an id listed already: the path that skips those
            con.execute("ROLLBACK")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    con.execute(f"INSERT INTO {PENDING} (interaction_id, text_bytes, client_key) SELECT "
                "unnest(?::VARCHAR[]), unnest(?::BIGINT[]), unnest(?::VARCHAR[]) "
                "ON CONFLICT DO NOTHING",
                [listed["interaction_id"].to_pylist(), listed["text_bytes"].to_pylist(),
                 listed["client_key"].to_pylist()])


def pending_rows(con: Connection, limit: int, *, newest: bool = False,
                 ids: Sequence[str] | None = None, after: str | None = None) -> pa.Table:
    """Up to `limit` interactions not yet indexed (BATCH_COLUMNS; oldest first, or newest),
    or those of `ids` that are; `after`: only ids after it (the next batch, read while the
    one before is being written). A listed id whose interaction is gone comes with a NULL
    endpoint: claiming it drops it from the list."""
    if not table_exists(con, PENDING):
        return pa.table({c: pa.array([], pa.string()) for c in BATCH_COLUMNS})
    params: list[Any] = [] if ids is None else [list(ids)]
    where = "" if ids is None else "WHERE p.interaction_id = ANY(?::VARCHAR[]) "
    if after is not None:
        where, params = f"{where}{'AND' if where else 'WHERE'} p.interaction_id > ? ", \
            [*params, after]
    rows = con.execute(
        "SELECT p.interaction_id, i.endpoint, CAST(i.request AS VARCHAR), "
        f"CAST(i.response AS VARCHAR) FROM {PENDING} p LEFT JOIN interactions i "
        f"ON i.id = p.interaction_id {where}ORDER BY p.interaction_id "
        f"{'DESC' if newest else 'ASC'} LIMIT ?", [*params, limit]).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(BATCH_COLUMNS)
    return pa.table([pa.array(list(c), pa.string()) for c in columns], names=BATCH_COLUMNS)


def store_claimed(con: Connection, forward: ForwardIndex, ids: Sequence[str]) -> int:
    """Take `ids` off the not-yet-indexed list and write the forward index of those this
    call took (another replica may have indexed some, `forget` deleted others meanwhile), in
    one transaction: a crash leaves them listed and unindexed, never half. Answers how many
    were taken."""
    with transaction(con):
        return _claim_and_store(con, forward, ids)


def _claim_and_store(con: Connection, forward: ForwardIndex, ids: Sequence[str]) -> int:
    claimed = [r[0] for r in con.execute(
        f"DELETE FROM {PENDING} WHERE interaction_id = ANY(?::VARCHAR[]) "
        "RETURNING interaction_id", [list(ids)]).fetchall()]
    if not claimed:
        return 0
    if len(claimed) < len(ids):
        taken = pa.array(claimed, pa.string())
        forward = ForwardIndex(
            forward.docs.filter(pc.is_in(forward.docs["interaction_id"], value_set=taken)),
            forward.words.filter(pc.is_in(forward.words["interaction_id"], value_set=taken)))
    store_forward_index(con, forward)
    return len(claimed)


def index_pending_now(con: Connection, ids: Sequence[str]) -> None:
    """Index those of `ids` not indexed yet, here and now, in the caller's transaction (an
    edit needs the logged terms)."""
    batch = pending_rows(con, len(ids), ids=ids)
    if batch.num_rows:
        _claim_and_store(con, batch_forward_index(batch), batch["id"].to_pylist())


def backfill(con: Connection, chunk_rows: int = 5000) -> int:
    """Index the interactions in the database that are not indexed yet, `chunk_rows` at a time
    (run by migration 35 to rebuild the index)."""
    done = 0
    last = ""
    while True:
        rows = con.execute(
            "SELECT id, endpoint, request, response FROM interactions WHERE id > ? "
            "ORDER BY id LIMIT ?", [last, chunk_rows]).fetchall()
        if not rows:
            return done
        last = rows[-1][0]
        index_batch(con, pa.Table.from_pylist([dict(zip(BATCH_COLUMNS, r, strict=True))
                                               for r in rows]))
        done += len(rows)
        log.info("search index backfill: %d interactions", done)


class SearchIndexer:
    """The ingest hook of the server: large batches get their forward index computed in the
    worker process (`storage.compute_worker`); small ones here, where a round trip would cost
    more than the work."""

    def __init__(self, worker: ComputeWorker | None, *, min_rows: int = 200):
        self.worker = worker
        self.min_rows = min_rows
        self.rows_to_worker = 0
        self.rows_here = 0

    def forward_index(self, batch: pa.Table) -> ForwardIndex:
        columns = batch.select(BATCH_COLUMNS)
        if self.worker is not None and columns.num_rows >= self.min_rows:
            self.rows_to_worker += columns.num_rows
            return self.worker.run(batch_forward_index, columns)
        self.rows_here += columns.num_rows
        return batch_forward_index(columns)

    def __call__(self, con: Connection, batch: pa.Table) -> None:
        store_forward_index(con, self.forward_index(batch))

    def compute(self, batch: pa.Table) -> Callable[[Connection], None]:
        """The index computed now (before the ingest transaction), written by the function
        returned (in it): see storage.writer.IngestHook."""
        forward = self.forward_index(batch)
        return lambda con: store_forward_index(con, forward)
