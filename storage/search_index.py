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
import re
from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa

from storage.db import Connection
from storage.messages import is_reviewable, message_text, messages_of

log = logging.getLogger("tuneloop.search")

MAX_TERM_LENGTH = 64
MAX_TERMS_PER_INTERACTION = 20_000
_WORD = re.compile(r"\w+")

TERMS_SCHEMA = pa.schema([("term_key", pa.int64()), ("interaction_id", pa.string())])
DOCS_SCHEMA = pa.schema([("interaction_id", pa.string()), ("term_keys", pa.list_(pa.int64()))])


def term_key(term: str) -> int:
    """A stable signed 64-bit key (blake2b): collisions are out of practical reach."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def terms_of(text: str) -> list[str]:
    """Distinct lower-case words of a text, in first-seen order."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.lower()):
        word = match.group()
        if len(word) <= MAX_TERM_LENGTH:
            seen.setdefault(word, None)
            if len(seen) >= MAX_TERMS_PER_INTERACTION:
                break
    return list(seen)


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


def _index(con: Connection, docs: Iterable[tuple[str, list[str]]]) -> None:
    """Index (interaction id, terms) pairs not indexed yet."""
    docs = list(docs)
    forward = pa.table([[d[0] for d in docs], [[term_key(t) for t in d[1]] for d in docs]],
                       schema=DOCS_SCHEMA)
    fresh = set(_insert(con, "search_docs", forward, "RETURNING interaction_id"))
    keys: list[int] = []
    ids: list[str] = []
    for interaction_id, words in docs:
        if interaction_id in fresh:
            keys.extend(map(term_key, words))
            ids.extend([interaction_id] * len(words))
    _insert(con, "search_terms", pa.table([keys, ids], schema=TERMS_SCHEMA))


def _words(row: dict[str, Any]) -> list[str]:
    try:
        return terms_of(interaction_text(row["endpoint"], row["request"], row["response"]) or "")
    except Exception:  # a record we can't read must not stop ingest; it is just not searchable
        log.exception("could not index the text of interaction %s", row["id"])
        return []


def index_batch(con: Connection, batch: pa.Table) -> None:
    """IngestHook: index the reviewable interactions of a freshly inserted batch."""
    rows = batch.select(["id", "endpoint", "request", "response"]).to_pylist()
    _index(con, ((row["id"], _words(row)) for row in rows if is_reviewable(row["endpoint"])))


def index_edit(con: Connection, interaction_id: str, messages: list[dict[str, Any]]) -> None:
    """Add the words of an edited message list that the interaction was not indexed with."""
    rows = con.execute("SELECT term_keys FROM search_docs WHERE interaction_id = ?",
                       [interaction_id]).fetchall()
    if not rows:
        _index(con, [(interaction_id, terms_of(message_text(messages)))])
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
