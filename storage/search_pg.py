"""Text search on Postgres: the tsvector of `search_docs` (migration 50) and a plan of its own
for newest-first results.

The query is one tsquery: each term its lexemes (its 64-bit key in hex with the suffix of a
field, as `tuneloop_search_vector` writes them) in the fields of `q_in` ORed
(`conversation`: user or answer), a prefix the OR of the words seen with it (search_words, as
on DuckDB), the terms ANDed. So both stores find the same items, and the GIN index answers
the whole query, fields included (no row is read again to check a weight).

Left to itself, the planner takes one of two shapes for `lexemes @@ q ORDER BY id DESC LIMIT n`
and picks by its estimate, and a wrong pick is expensive: for a rare term, the primary key's
index backwards, every row filtered (1.6-3.9 s at 1M rows); for a common term, a GIN bitmap of
hundreds of thousands of rows, then sorted. So the shape is chosen here and forced:

- rare (estimated matches below `rare_limit`: the cost of reading every match is then below
  that of reading the rows between the matches of a page): the GIN's matches, MATERIALIZED
  (the planner can't turn it into the key scan), sorted, the first `count` taken;
- common: a window of the next `count` rows below `before` by the primary key, newest first,
  each tested with `ts_match_vq` (the function behind `@@`: not indexable, so no bitmap).
  A window in which the matches are sparse after all switches the search to the rare shape.

The estimate is the planner's own for `lexemes @@ q` (from the lexeme frequencies ANALYZE
keeps in pg_stats, most_common_elems): planning only, no rows read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from storage.db import Connection
from storage.migrations.m050_search_vectors import FIELD_SUFFIXES

KEY_MASK = (1 << 64) - 1
RARE_FACTOR = 16  # rare: estimated matches below RARE_FACTOR * sqrt(rows)
SPARSE = 64  # a common window with fewer than 1/SPARSE of its rows matching: go rare
SPARSE_MIN_WINDOW = 1024


def lexeme(key: int) -> str:
    """A term key as its lexeme: to_hex() of the signed 64-bit key."""
    return format(key & KEY_MASK, "x")


def tsquery(groups: Sequence[frozenset[int]], bits: int) -> str:
    """Every group (a term, or the terms of a prefix) present in one of the fields `bits`."""
    suffixes = [suffix for bit, suffix in FIELD_SUFFIXES if bits & bit]
    parts = []
    for group in groups:
        alternatives = [f"'{lexeme(k)}{suffix}'" for k in sorted(group) for suffix in suffixes]
        parts.append(alternatives[0] if len(alternatives) == 1
                     else "(" + " | ".join(alternatives) + ")")
    return " & ".join(parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def planned_rows(con: Connection, where: str) -> float:
    """The planner's estimate of the rows of search_docs matching `where` (no rows read)."""
    plan = con.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM search_docs WHERE {where}"
                       ).fetchall()[0][0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


class VectorSearch:
    """The interactions indexed in search_docs that hold every group, newest first, in
    batches (the indexed part of storage.search.TermSearch on Postgres)."""

    def __init__(self, con: Connection, groups: Sequence[frozenset[int]], bits: int):
        self.query = _literal(tsquery(groups, bits)) + "::tsquery"
        rows = planned_rows(con, "TRUE")
        self.estimate = planned_rows(con, f"lexemes @@ {self.query}")
        self.rare_limit = RARE_FACTOR * math.sqrt(max(rows, 1.0))
        self.rare = self.estimate < self.rare_limit

    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]:
        """Matching ids below `before`, newest first, and where the next batch starts."""
        if self.rare:
            return self._rare(con, before, count)
        return self._window(con, before, count)

    def rare_sql(self, before: str | None, count: int) -> tuple[str, list[Any]]:
        """The rare shape: every match (the GIN), materialized, the newest `count` taken."""
        below, params = ("AND interaction_id < ? ", [before]) if before is not None else ("", [])
        return ("WITH matches AS MATERIALIZED (SELECT interaction_id FROM search_docs "
                f"WHERE lexemes @@ {self.query} {below}) "
                "SELECT interaction_id FROM matches ORDER BY interaction_id DESC LIMIT ?",
                [*params, count])

    def window_sql(self, before: str | None, count: int) -> tuple[str, list[Any]]:
        """The common shape: the next `count` rows by the primary key, each tested."""
        below, params = ("WHERE interaction_id < ? ", [before]) if before is not None \
            else ("", [])
        return (f"SELECT interaction_id, ts_match_vq(lexemes, {self.query}) FROM search_docs "
                f"{below}ORDER BY interaction_id DESC LIMIT ?", [*params, count])

    def _rare(self, con: Connection, before: str | None,
              count: int) -> tuple[list[str], str | None]:
        ids = [r[0] for r in con.execute(*self.rare_sql(before, count)).fetchall()]
        return ids, (ids[-1] if len(ids) == count else None)

    def _window(self, con: Connection, before: str | None,
                count: int) -> tuple[list[str], str | None]:
        rows: list[Any] = con.execute(*self.window_sql(before, count)).fetchall()
        ids = [r[0] for r in rows if r[1]]
        if count >= SPARSE_MIN_WINDOW and len(ids) * SPARSE < count:
            self.rare = True  # sparse after all: the rest of the search reads the matches
        return ids, (rows[-1][0] if len(rows) == count else None)
