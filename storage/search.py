"""Text search over prompts and completions without DuckDB's fts extension: a term index.

Every ingested interaction that has a message list gets one row per distinct term of its text
in `search_terms` (term, a stable 32-bit hash of it, interaction id). The index is kept by an
`IngestHook` inside the ingest transaction, so it is never behind the interactions table, and
edited message lists add their new terms. Rows arrive in ingest order, which is id order, so a
term's newest postings are found by a Top-N scan that stops early, and a scan for a rare term
reads a column of 32-bit integers rather than the text of a million prompts.

A query matches the interactions that contain every term of `q` (case-insensitive, whole
words: `refund policy` finds texts with both "refund" and "policy").
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa

from storage.db import Connection
from storage.messages import is_reviewable, message_text, messages_of
from tuneloop.errors import BadRequest

log = logging.getLogger("tuneloop.search")

MAX_TERM_LENGTH = 64
MAX_TERMS_PER_INTERACTION = 20_000
MAX_QUERY_TERMS = 8
_WORD = re.compile(r"\w+")
_BATCH = "_search_batch"

TERMS_SCHEMA = pa.schema([("term_hash", pa.int32()), ("term", pa.string()),
                          ("interaction_id", pa.string())])


def term_hash(term: str) -> int:
    """A stable signed 32-bit hash (crc32), the same in every process and DuckDB version."""
    return zlib.crc32(term.encode("utf-8")) - 2**31


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


def query_terms(q: str) -> list[str]:
    terms = terms_of(q)
    if not terms:
        raise BadRequest("q must contain at least one word", param="q")
    if len(terms) > MAX_QUERY_TERMS:
        raise BadRequest(f"q may contain at most {MAX_QUERY_TERMS} words", param="q")
    # the longest word first: a cheap guess at the rarest one, which drives the search
    return sorted(terms, key=len, reverse=True)


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


def postings(docs: Iterable[tuple[str, str]]) -> pa.Table:
    """(interaction id, text) pairs to term-index rows."""
    hashes: list[int] = []
    terms: list[str] = []
    ids: list[str] = []
    for interaction_id, text in docs:
        for term in terms_of(text):
            hashes.append(term_hash(term))
            terms.append(term)
            ids.append(interaction_id)
    return pa.table([hashes, terms, ids], schema=TERMS_SCHEMA)


def _insert_postings(con: Connection, table: pa.Table) -> None:
    if table.num_rows == 0:
        return
    con.register(_BATCH, table)
    try:
        con.execute("INSERT INTO search_terms SELECT term_hash, term, interaction_id "
                    f"FROM {_BATCH}")
    finally:
        con.unregister(_BATCH)


def index_batch(con: Connection, batch: pa.Table) -> None:
    """IngestHook: index the interactions of a batch that were not indexed before (a replayed
    spool segment brings ids that are already there)."""
    columns = batch.select(["id", "endpoint", "request", "response"]).to_pylist()
    reviewable = [row for row in columns if is_reviewable(row["endpoint"])]
    if not reviewable:
        return
    con.register(_BATCH, pa.table({"interaction_id": [row["id"] for row in reviewable]}))
    try:
        fresh = {r[0] for r in con.execute(
            f"INSERT OR IGNORE INTO search_docs SELECT interaction_id FROM {_BATCH} "
            "RETURNING interaction_id").fetchall()}
    finally:
        con.unregister(_BATCH)
    docs = []
    for row in reviewable:
        if row["id"] in fresh:
            text = interaction_text(row["endpoint"], row["request"], row["response"])
            docs.append((row["id"], text or ""))
    _insert_postings(con, postings(docs))


def index_edit(con: Connection, interaction_id: str, messages: list[dict[str, Any]]) -> None:
    """Add the terms of an edited message list that the interaction was not indexed with."""
    known = {r[0] for r in con.execute(
        "SELECT term FROM search_terms WHERE interaction_id = ?", [interaction_id]).fetchall()}
    new = [t for t in terms_of(message_text(messages)) if t not in known]
    _insert_postings(con, postings([(interaction_id, " ".join(new))]))


def backfill(con: Connection, chunk_rows: int = 5000) -> int:
    """Index interactions logged before the index existed (run by the migration)."""
    done = 0
    last = ""
    while True:
        rows = con.execute(
            "SELECT id, endpoint, request, response FROM interactions "
            "WHERE id > ? AND id NOT IN (SELECT interaction_id FROM search_docs) "
            "ORDER BY id LIMIT ?", [last, chunk_rows]).fetchall()
        if not rows:
            return done
        last = rows[-1][0]
        names = ["id", "endpoint", "request", "response"]
        index_batch(con, pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows]))
        done += len(rows)
        log.info("search index backfill: %d interactions", done)


def term_condition(term: str, alias: str = "i", bounds: tuple[str, str] | None = None
                   ) -> tuple[str, list[Any]]:
    """SQL condition: the interaction `alias` contains `term` (optionally only looking at
    postings of ids within `bounds`, which lets DuckDB skip the rest of the index)."""
    sql = "SELECT interaction_id FROM search_terms WHERE term_hash = ? AND term = ?"
    params: list[Any] = [term_hash(term), term]
    if bounds is not None:
        sql += " AND interaction_id BETWEEN ? AND ?"
        params.extend(bounds)
    return f"{alias}.id IN ({sql})", params


def term_driver(con: Connection, term: str, before: str | None, count: int) -> list[str]:
    """Up to `count` ids containing `term`, newest first, below `before`."""
    sql = "SELECT interaction_id FROM search_terms WHERE term_hash = ? AND term = ?"
    params: list[Any] = [term_hash(term), term]
    if before is not None:
        sql += " AND interaction_id < ?"
        params.append(before)
    rows = con.execute(sql + " ORDER BY interaction_id DESC LIMIT ?", [*params, count]).fetchall()
    return [r[0] for r in rows]
