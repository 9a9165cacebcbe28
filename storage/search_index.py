"""The term index behind text search (`q`), kept without DuckDB's fts extension.

Two tables, written inside the ingest transaction by `index_batch` (a `LogWriter` hook), so
they are never behind the interactions table:

- `search_terms` (term_key BIGINT, interaction_id): one row per distinct word of an
  interaction's prompt and completion text, the word as a 64-bit key (collisions are out of
  practical reach, so no word text is stored or compared). Rows arrive in ingest order, which
  is id order, so the newest postings of a word are found by a Top-N scan that stops early (it
  reads row groups newest first and skips the rest by their min/max id), and a rare word costs
  one scan of a column of integers, not of a million prompts.
- `search_docs` (interaction_id PRIMARY KEY, term_keys BIGINT[]): the same keys per
  interaction, to check the other words of a multi-word query on a handful of candidates. Its
  primary key also makes indexing idempotent when a spool segment is replayed.

Edited message lists add their new words (search finds an item by any of its revisions).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from storage.compute_worker import ComputeWorker
from storage.db import Connection
from storage.messages import is_reviewable, message_text, messages_of

log = logging.getLogger("tuneloop.search")

MAX_TERM_LENGTH = 64
MAX_TEXT_CHARS = 1_000_000
# a word is a run of letters, digits and "_"; tokenized by Arrow (C++, without the GIL) for
# ingest batches and single texts alike, so queries and the index always agree
_NOT_WORD = r"[^\p{L}\p{N}_]+"

TERMS_SCHEMA = pa.schema([("term_key", pa.int64()), ("interaction_id", pa.string())])
DOCS_SCHEMA = pa.schema([("interaction_id", pa.string()), ("term_keys", pa.list_(pa.int64()))])


def term_key(term: str) -> int:
    """A stable signed 64-bit key (blake2b): collisions are out of practical reach."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def words_of(texts: Sequence[str]) -> tuple[np.ndarray, pa.Array]:
    """Every word of the texts (lower-cased, at most MAX_TERM_LENGTH characters: longer runs,
    like base64 blobs, are left out) with the index of its text, repeats included."""
    array = pa.array([text[:MAX_TEXT_CHARS] for text in texts], pa.string())
    split = pc.split_pattern_regex(pc.utf8_lower(array), pattern=_NOT_WORD)
    words = pc.list_flatten(split)
    length = pc.utf8_length(words)
    keep = pc.and_(pc.greater(length, 0), pc.less_equal(length, MAX_TERM_LENGTH))
    text_index = pc.filter(pc.list_parent_indices(split), keep).to_numpy()
    return text_index, pc.filter(words, keep)


def terms_of(text: str) -> list[str]:
    """The distinct words of one text, sorted."""
    return sorted(set(words_of([text])[1].to_pylist()))


def interaction_text(endpoint: str | None, request: Any, response: Any) -> str | None:
    """The searchable text of a logged interaction (JSON columns given as text or parsed)."""
    if not is_reviewable(endpoint):
        return None
    assert endpoint is not None
    messages, alternatives = messages_of(endpoint, _parsed(request), _parsed(response))
    return message_text(messages + alternatives)


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
    con.register(view, rows)
    verb = "INSERT OR IGNORE" if suffix else "INSERT"
    try:
        result = con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM {view} "
                             f"{suffix}").fetchall()
    finally:
        con.unregister(view)
    return [r[0] for r in result] if suffix else []


def forward_index(ids: Sequence[str], texts: Sequence[str]) -> pa.Table:
    """(interaction_id, term_keys) for texts: each word of a text once. Pure, so it can run in
    the index worker process; vectorized (Arrow and numpy): only the distinct words of the
    batch are hashed in Python."""
    if not ids:
        return DOCS_SCHEMA.empty_table()
    text_index, words = words_of(texts)
    encoded = pc.dictionary_encode(words)
    vocabulary = encoded.dictionary
    size = max(1, len(vocabulary))
    pairs = np.sort(text_index.astype(np.int64) * size
                    + encoded.indices.to_numpy(zero_copy_only=False))  # by text, then word
    if len(pairs):
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]  # each word once
    keys = np.array([term_key(w) for w in vocabulary.to_pylist()], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(pairs // size, minlength=len(ids)))])
    return pa.table([pa.array(ids, pa.string()),
                     pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                              pa.array(keys[pairs % size]))],
                    schema=DOCS_SCHEMA).sort_by("interaction_id")


def store_forward_index(con: Connection, forward: pa.Table) -> None:
    """Write a forward index into both tables, skipping interactions already indexed (a
    replayed spool segment)."""
    fresh = _insert(con, "search_docs", forward, "RETURNING interaction_id")
    if len(fresh) < forward.num_rows:
        forward = forward.filter(pc.is_in(forward["interaction_id"],
                                          value_set=pa.array(fresh, pa.string())))
    flat = forward["term_keys"].combine_chunks()
    _insert(con, "search_terms", pa.table(
        [flat.flatten(), forward["interaction_id"].take(pc.list_parent_indices(flat))],
        schema=TERMS_SCHEMA))


def _index(con: Connection, ids: Sequence[str], texts: Sequence[str]) -> None:
    """Index interactions (ids with their texts) that are not indexed yet."""
    if ids:
        store_forward_index(con, forward_index(ids, texts))


def _text(row: dict[str, Any]) -> str:
    try:
        return interaction_text(row["endpoint"], row["request"], row["response"]) or ""
    except Exception:  # a record we can't read must not stop ingest; it is just not searchable
        log.exception("could not index the text of interaction %s", row["id"])
        return ""


BATCH_COLUMNS = ["id", "endpoint", "request", "response"]


def batch_forward_index(batch: pa.Table) -> pa.Table:
    """The forward index of the reviewable interactions of an ingest batch (columns
    BATCH_COLUMNS at least). Pure: the index worker runs it."""
    rows = [row for row in batch.select(BATCH_COLUMNS).to_pylist()
            if is_reviewable(row["endpoint"])]
    return forward_index([row["id"] for row in rows], [_text(row) for row in rows])


def index_batch(con: Connection, batch: pa.Table) -> None:
    """IngestHook: index the reviewable interactions of a freshly inserted batch, in this
    process (the server's hook is a SearchIndexer, which uses the worker process)."""
    store_forward_index(con, batch_forward_index(batch))


def index_edit(con: Connection, interaction_id: str, messages: list[dict[str, Any]]) -> None:
    """Add the words of an edited message list that the interaction was not indexed with."""
    rows = con.execute("SELECT term_keys FROM search_docs WHERE interaction_id = ?",
                       [interaction_id]).fetchall()
    if not rows:
        _index(con, [interaction_id], [message_text(messages)])
        return
    known = set(rows[0][0])
    new = [t for t in terms_of(message_text(messages)) if term_key(t) not in known]
    if not new:
        return
    con.execute("UPDATE search_docs SET term_keys = list_concat(term_keys, ?::BIGINT[]) "
                "WHERE interaction_id = ?", [[term_key(t) for t in new], interaction_id])
    _insert(con, "search_terms", pa.table(
        [[term_key(t) for t in new], [interaction_id] * len(new)], schema=TERMS_SCHEMA))


def backfill(con: Connection, chunk_rows: int = 5000) -> int:
    """Index interactions logged before the index existed (run by the migration)."""
    done = 0
    last = ""
    while True:
        rows = con.execute(
            "SELECT id, endpoint, request, response FROM interactions WHERE id > ? "
            "ORDER BY id LIMIT ?", [last, chunk_rows]).fetchall()
        if not rows:
            return done
        last = rows[-1][0]
        names = ["id", "endpoint", "request", "response"]
        index_batch(con, pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows]))
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

    def forward_index(self, batch: pa.Table) -> pa.Table:
        columns = batch.select(BATCH_COLUMNS)
        if self.worker is not None and columns.num_rows >= self.min_rows:
            self.rows_to_worker += columns.num_rows
            return self.worker.run(batch_forward_index, columns)
        self.rows_here += columns.num_rows
        return batch_forward_index(columns)

    def __call__(self, con: Connection, batch: pa.Table) -> None:
        store_forward_index(con, self.forward_index(batch))
