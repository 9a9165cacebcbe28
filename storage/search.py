"""Text search (`q`) over the term index of `storage.search_index`.

A query matches the interactions whose prompt or completion text (any revision's) contains
every word of `q`, case-insensitively, as whole words: `refund policy` finds texts with both
"refund" and "policy". The rarest word (estimated on the newest postings) drives the search:
its postings give candidates newest first; the other words are checked on those candidates
only, through the per-interaction word keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.db import Connection
from storage.lookup import ids_condition
from storage.search_index import term_key, terms_of
from tuneloop.errors import BadRequest

MAX_QUERY_TERMS = 8
SAMPLE_POSTINGS = 2_000_000


def query_terms(q: str) -> list[str]:
    terms = terms_of(q)
    if not terms:
        raise BadRequest("q must contain at least one word", param="q")
    if len(terms) > MAX_QUERY_TERMS:
        raise BadRequest(f"q may contain at most {MAX_QUERY_TERMS} words", param="q")
    return terms


def rarest_term(con: Connection, terms: Sequence[str]) -> str:
    """The word with the fewest postings among the newest ones (a cheap sample)."""
    if len(terms) == 1:
        return terms[0]
    total = con.execute("SELECT count(*) FROM search_terms").fetchall()[0][0]
    counts = dict(con.execute(
        "SELECT term_key, count(*) FROM search_terms WHERE rowid >= ? "
        "AND term_key IN (SELECT unnest(?::BIGINT[])) GROUP BY 1",
        [max(0, total - SAMPLE_POSTINGS), [term_key(t) for t in terms]]).fetchall())
    return min(terms, key=lambda t: (counts.get(term_key(t), 0), -len(t)))


class TermSearch:
    """Candidates for a query, newest first, in batches (see `storage.queue`)."""

    def __init__(self, con: Connection, q: str):
        terms = query_terms(q)
        self.driver = term_key(rarest_term(con, terms))
        self.others = {term_key(t) for t in terms} - {self.driver}

    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]:
        """Ids below `before` that contain every word, newest first, from the next `count`
        postings of the driving word; and where the next batch starts (None: no more)."""
        sql = "SELECT interaction_id FROM search_terms WHERE term_key = ?"
        params: list[Any] = [self.driver]
        if before is not None:
            sql += " AND interaction_id < ?"
            params.append(before)
        rows = con.execute(sql + " ORDER BY interaction_id DESC LIMIT ?",
                           [*params, count]).fetchall()
        ids = [r[0] for r in rows]
        next_before = ids[-1] if len(ids) == count else None
        if ids and self.others:
            ids = self._with_other_terms(con, ids)
        return ids, next_before

    def _with_other_terms(self, con: Connection, ids: list[str]) -> list[str]:
        where, params = ids_condition("interaction_id", ids)
        keys = {i: set(k) for i, k in con.execute(
            f"SELECT interaction_id, term_keys FROM search_docs WHERE {where}", params
        ).fetchall()}
        return [i for i in ids if i in keys and keys[i].issuperset(self.others)]
