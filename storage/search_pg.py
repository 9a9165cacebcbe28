"""Text search on Postgres: the tsvector of `search_docs` (migration 50) and a plan of its own
for newest-first results.

The query is one tsquery: each term its lexemes (its 64-bit key in hex with the suffix of a
field, as `tuneloop_search_vector` writes them) in the fields of `q_in` ORed
(`conversation`: user or answer), a prefix the OR of the words seen with it (search_words, as
on DuckDB), the terms ANDed. So both stores find the same items, and the GIN index answers
the whole query, fields included (no row is read again to check a weight). A prefix of many
words (more than BIG_GROUP lexemes) is its own condition, `lexemes @@ ANY` of one-lexeme
tsqueries: the GIN checks each candidate against a whole tsquery (`match_condition`).

Left to itself, the planner takes one of two shapes for `lexemes @@ q ORDER BY id DESC LIMIT n`
and picks by its estimate, and a wrong pick is expensive: for a rare term, the primary key's
index backwards, every row filtered (1.6-3.9 s at 1M rows); for a common term, a GIN bitmap of
hundreds of thousands of rows, then sorted. So the shape is chosen here and forced, and each
call's cost stays bounded by the page asked, not by the matches:

- rare (estimated matches below `rare_limit`: the cost of reading every match is then below
  that of reading the rows between the matches of a page): the GIN's matches, at most
  `rare_cap` + 1 of them, MATERIALIZED (the planner can't turn it into the key scan), sorted,
  the first `count` taken. More than `rare_cap` (an estimate without statistics, correlated
  terms, a word common overall but absent from the newest rows): the search goes on by
  windows, and by id ranges where they are sparse;
- in a range (the matches sparse, and too many for the rare shape): the GIN's matches between
  two ids `span` rows apart (the primary key's index counts them), the GIN's bitmap ANDed with
  the key's, the newest `count` taken; more than `rare_cap` in it, it is asked again
  SPAN_GROWTH times narrower. A range without enough matches makes the next one
  SPAN_GROWTH times wider, so a stretch of rows without a match costs a few reads, not a
  window per `count` rows (a word in half the older rows, none of the newest 200k: 0.8 s by
  windows, r12z HIGH/MED 3); a full one goes back to windows;
- common: a window of the next `count` rows below `before` by the primary key, newest first,
  each tested with `ts_match_vq` (the function behind `@@`: not indexable, so no bitmap), or
  by its keys here for a query with a big group. A window in which the matches are sparse
  after all tries the rare shape (which, capped, gives up at once when they are many further
  down), then ranges.

The estimate is the planner's own for the condition (from the lexeme frequencies ANALYZE
keeps in pg_stats, most_common_elems): planning only, no rows read.

A page has a time budget (PAGE_BUDGET_S) across its statements, each run under a
statement_timeout of what is left: a search the plans above still can't answer in it (a word
common overall but absent from the newest hundreds of thousands of rows) is a clear 400 asking
for a narrower query, not seconds of a database core per call.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from typing import Any

from storage.db import Connection
from storage.migrations.m050_search_vectors import FIELD_SUFFIXES
from tuneloop.errors import BadRequest

KEY_MASK = (1 << 64) - 1
RARE_FACTOR = 16  # rare: estimated matches below RARE_FACTOR * sqrt(rows)
RARE_CAP_FACTOR = 2  # the rare shape reads at most this many times rare_limit matches
SPARSE = 64  # a common window with fewer than 1/SPARSE of its rows matching: try rare
SPARSE_MIN_WINDOW = 1024
FIRST_SPAN = 16  # times `count`: the first range's rows
SPAN_GROWTH = 8
MAX_SPAN = 1 << 21
BIG_GROUP = 64  # lexemes: a group with more is asked as `@@ ANY` of one-lexeme tsqueries
PAGE_BUDGET_S = 2.0  # the statements of one page together (a bound, not the target)
QUERY_CANCELED = "57014"  # SQLSTATE of a statement stopped by statement_timeout


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


def match_condition(groups: Sequence[frozenset[int]], bits: int) -> str:
    """The SQL condition on `lexemes` for every group: the small groups as one tsquery, each
    big one (a prefix of many words) as `lexemes @@ ANY` of its lexemes, one tsquery each: the
    GIN checks a candidate against the whole of a tsquery, so an OR of ~2,000 lexemes cost
    ~2,000 steps for every row any of them matches (37 s a page at 300k rows, r12z HIGH 1);
    `ANY` is one index scan per lexeme, the bitmaps ORed."""
    small = [g for g in groups if len(group_lexemes(g, bits)) <= BIG_GROUP]
    big = [g for g in groups if len(group_lexemes(g, bits)) > BIG_GROUP]
    conditions = [f"lexemes @@ {_literal(tsquery(small, bits))}::tsquery"] if small else []
    for group in big:  # the lexemes are hex digits and a suffix letter: nothing to escape
        conditions.append("lexemes @@ ANY(ARRAY[" + ", ".join(
            f"'{lx}'::tsquery" for lx in group_lexemes(group, bits)) + "])")
    return " AND ".join(conditions)


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

    def __init__(self, con: Connection, groups: Sequence[frozenset[int]], bits: int, *,
                 budget_s: float = PAGE_BUDGET_S):
        self.deadline = time.monotonic() + budget_s
        self.groups, self.bits = list(groups), bits
        self.big = any(len(group_lexemes(g, bits)) > BIG_GROUP for g in groups)
        self.condition = match_condition(groups, bits)
        rows = planned_rows(con, "TRUE")
        self.estimate = planned_rows(con, self.condition)
        self.rare_limit = RARE_FACTOR * math.sqrt(max(rows, 1.0))
        self.rare_cap = int(RARE_CAP_FACTOR * self.rare_limit)
        self.rare = self.estimate < self.rare_limit
        self.ranged = False  # the rare shape found too many: sparse stretches by id ranges
        self.in_range = False  # the next batch is a range
        self.span = 0

    def candidates(self, con: Connection, before: str | None,
                   count: int) -> tuple[list[str], str | None]:
        """Matching ids below `before`, newest first, and where the next batch starts."""
        if self.rare:
            return self._rare(con, before, count)
        if self.in_range:
            return self._in_range(con, before, count)
        return self._window(con, before, count)

    def rare_sql(self, before: str | None, count: int) -> tuple[str, list[Any]]:
        """The rare shape: the matches (the GIN), at most rare_cap + 1 of them,
        materialized, the newest `count` taken, with how many were read."""
        below, params = ("AND interaction_id < ? ", [before]) if before is not None else ("", [])
        return ("WITH matches AS MATERIALIZED (SELECT interaction_id FROM search_docs "
                f"WHERE {self.condition} {below}LIMIT ?) "
                "SELECT interaction_id, (SELECT count(*) FROM matches) FROM matches "
                "ORDER BY interaction_id DESC LIMIT ?", [*params, self.rare_cap + 1, count])

    def window_sql(self, before: str | None, count: int) -> tuple[str, list[Any]]:
        """The common shape: the next `count` rows by the primary key, each tested (a query
        with a big group: their keys, tested here)."""
        below, params = ("WHERE interaction_id < ? ", [before]) if before is not None \
            else ("", [])
        test = "term_keys, term_fields" if self.big else \
            f"ts_match_vq(lexemes, {_literal(tsquery(self.groups, self.bits))}::tsquery)"
        return (f"SELECT interaction_id, {test} FROM search_docs "
                f"{below}ORDER BY interaction_id DESC LIMIT ?", [*params, count])

    def _rare(self, con: Connection, before: str | None,
              count: int) -> tuple[list[str], str | None]:
        rows = self._timed(con, *self.rare_sql(before, count))
        if rows and rows[0][1] > self.rare_cap:  # many after all (an estimate without
            self.rare, self.ranged = False, True  # statistics, correlated terms...)
            self.span = FIRST_SPAN * count
            return self._window(con, before, count)
        ids = [r[0] for r in rows]
        return ids, (ids[-1] if len(ids) == count else None)

    def _window(self, con: Connection, before: str | None,
                count: int) -> tuple[list[str], str | None]:
        rows = self._timed(con, *self.window_sql(before, count))
        ids = [r[0] for r in rows if self._holds(r)]
        if count >= SPARSE_MIN_WINDOW and len(ids) * SPARSE < count:
            if self.ranged:
                self.in_range = True
            else:  # sparse after all: try the matches (rare_cap of them at most)
                self.rare = True
        return ids, (rows[-1][0] if len(rows) == count else None)

    def range_sql(self, low: str | None, before: str | None,
                  count: int) -> tuple[str, list[Any]]:
        """A range: the matches (the GIN) from `low` to below `before`, at most rare_cap + 1
        of them, materialized, the newest `count` taken, with how many were read."""
        bounds = [(c, v) for c, v in (("interaction_id >= ?", low), ("interaction_id < ?", before))
                  if v is not None]
        where = "".join(f" AND {c}" for c, _ in bounds)
        return ("WITH matches AS MATERIALIZED (SELECT interaction_id FROM search_docs "
                f"WHERE {self.condition}{where} LIMIT ?) "
                "SELECT interaction_id, (SELECT count(*) FROM matches) FROM matches "
                "ORDER BY interaction_id DESC LIMIT ?",
                [*(v for _, v in bounds), self.rare_cap + 1, count])

    def _in_range(self, con: Connection, before: str | None,
                  count: int) -> tuple[list[str], str | None]:
        below, params = ("WHERE interaction_id < ? ", [before]) if before is not None \
            else ("", [])
        while True:
            lows = self._timed(con, f"SELECT interaction_id FROM search_docs {below}ORDER BY "
                               "interaction_id DESC LIMIT 1 OFFSET ?", [*params, self.span])
            low = lows[0][0] if lows else None
            rows = self._timed(con, *self.range_sql(low, before, count), bitmaps_only=True)
            if not rows or rows[0][1] <= self.rare_cap:
                break
            if self.span <= count:  # dense: windows again
                self.in_range = False
                return self._window(con, before, count)
            # more than rare_cap: too wide (the matches come in the table's order, not the
            # newest first), narrower from the same place
            self.span = max(count, self.span // SPAN_GROWTH)
        ids = [r[0] for r in rows]
        if len(ids) == count:  # dense here: windows again
            self.in_range = False
            return ids, ids[-1]
        self.span = min(self.span * SPAN_GROWTH, MAX_SPAN)
        return ids, low

    def _timed(self, con: Connection, sql: str, params: list[Any], *,
               bitmaps_only: bool = False) -> list[Any]:
        """The rows of one statement, run in what is left of the page's budget. `bitmaps_only`:
        a range, where the matches are sparse, is read through the GIN's bitmap ANDed with the
        key's, not the key's index filtered row by row (5 µs a row: 0.33 s for 65k rows)."""
        left_ms = int((self.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise self._too_broad()
        plans = "; SET enable_indexscan = off; SET enable_seqscan = off" if bitmaps_only else ""
        con.execute(f"SET statement_timeout = {left_ms}{plans}")
        try:
            return con.execute(sql, params).fetchall()
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == QUERY_CANCELED \
                    and time.monotonic() >= self.deadline - 0.05:
                raise self._too_broad() from exc
            raise
        finally:  # in a transaction the cancel aborted, the SET goes with it
            with contextlib.suppress(Exception):
                con.execute("RESET statement_timeout; RESET enable_indexscan; "
                            "RESET enable_seqscan")

    def _too_broad(self) -> BadRequest:
        return BadRequest("this search could not fill a page in its time budget "
                          f"({PAGE_BUDGET_S:g} s): its words match many older items and few "
                          "recent ones; add a rarer word, type more of a prefix, or filter "
                          "by date or model", code="search_too_broad", param="q")

    def _holds(self, row: Any) -> bool:
        if not self.big:
            return bool(row[1])
        held = {k for k, f in zip(row[1], row[2], strict=True) if f & self.bits}
        return all(not held.isdisjoint(group) for group in self.groups)
