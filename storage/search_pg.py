"""Text search on Postgres: the tsvector of `search_docs` (migration 51) read by its GIN index
for the joint matches of a query of several terms (storage.search.TermSearch asks when they
are sparse among the postings of its rarest term).

The query is one tsquery: each term its lexemes (its 64-bit key in hex with the suffix of a
field, as `tuneloop_search_vector` writes them) in the fields of `q_in` ORed
(`conversation`: user or answer), a prefix the OR of the words seen with it (search_words, as
on DuckDB), the terms ANDed. So both stores find the same items, and the GIN index answers
the whole query, fields included (no row is read again to check a weight). A prefix of many
words (more than BIG_GROUP lexemes) is left out of the question (`small_groups`) and
checked on the answers: the GIN checks a candidate against the whole of a tsquery, so an OR of
~2,000 lexemes cost ~2,000 steps for every row any of them matches (37 s a page at 300k rows),
and as `lexemes @@ ANY` of one-lexeme tsqueries the planner may test them row by row (8
prefixes took minutes); none small, the GIN is not asked.

The GIN gives the joint matches as one bitmap, in the table's order, not the newest first:
`joint_matches` reads at most JOINT_CAP + 1 of them (the bitmap forced: the planner, taking
the terms as independent, would scan the table or the key's index backwards for rows that
may not exist) and answers them all, newest first, or None when there are more (the walk of
the postings then goes on). At 300k rows the bitmap costs ~10 ms for terms in 60,000 rows,
and each row read ~8 µs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.db import Connection
from storage.migrations.m051_search_vectors import FIELD_SUFFIXES
from storage.transaction import transaction

KEY_MASK = (1 << 64) - 1
BIG_GROUP = 64  # lexemes: a group with more (a prefix of many words) is not asked of the GIN
JOINT_CAP = 2000  # the joint matches read from the GIN; more: the postings walk


def lexeme(key: int) -> str:
    """A term key as its lexeme: to_hex() of the signed 64-bit key."""
    return format(key & KEY_MASK, "x")


def group_lexemes(group: frozenset[int], bits: int) -> list[str]:
    suffixes = [suffix for bit, suffix in FIELD_SUFFIXES if bits & bit]
    return [f"{lexeme(k)}{suffix}" for k in sorted(group) for suffix in suffixes]


def tsquery(groups: Sequence[frozenset[int]], bits: int) -> str:
    """Every group (a term, or the terms of a prefix) present in one of the fields `bits`."""
    parts = []
    for group in groups:
        alternatives = [f"'{lx}'" for lx in group_lexemes(group, bits)]
        parts.append(alternatives[0] if len(alternatives) == 1
                     else "(" + " | ".join(alternatives) + ")")
    return " & ".join(parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def small_groups(groups: Sequence[frozenset[int]], bits: int) -> list[frozenset[int]]:
    """The groups the GIN is asked for: not a prefix of more than BIG_GROUP lexemes."""
    return [g for g in groups if len(group_lexemes(g, bits)) <= BIG_GROUP]


def joint_matches(con: Connection, groups: Sequence[frozenset[int]], bits: int,
                  below: str | None = None, cap: int = JOINT_CAP) -> list[str] | None:
    """The ids below `below` of the interactions in search_docs holding every group in the
    fields `bits` (small groups: one tsquery), newest first, when at most `cap` of them; None
    when there are more."""
    condition = f"lexemes @@ {_literal(tsquery(groups, bits))}::tsquery"
    params: list[Any] = [cap + 1]
    if below is not None:
        condition, params = f"{condition} AND interaction_id < ?", [below, *params]
    with transaction(con):  # SET LOCAL: a cancel (the page's budget) rolls them back too
        con.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
        rows = con.execute(f"SELECT interaction_id FROM search_docs WHERE {condition} "
                           "LIMIT ?", params).fetchall()
        # in a caller's transaction (a savepoint here), what its release would keep
        con.execute("RESET enable_seqscan; RESET enable_indexscan")
    if len(rows) > cap:
        return None
    return sorted((r[0] for r in rows), reverse=True)


class KnownMatches:
    """A query's every match, known: its batches newest first (the indexed part of
    storage.search.TermSearch)."""

    def __init__(self, matches: list[str]):
        self.matches = matches  # newest first

    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]:
        ids = [i for i in self.matches if before is None or i < before][:count]
        return ids, (ids[-1] if len(ids) == count else None)
