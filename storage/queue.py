"""Which interactions a review list shows: filtered, newest first, cursor-paginated.

Filters on the interaction's own columns are one DuckDB Top-N query, which stops early because
rows are stored in id (time) order. Filters that live in other tables (review state, reviewer
tags, feedback score, text search) would make DuckDB join every row before the Top-N, so they
are answered in id windows, newest first, each checked with every condition restricted to the
window, where DuckDB skips the other row groups of each table by their min/max statistics:

- with a selective "driver" (the term index for `q`, the reviews table for a reviewed state,
  feedback for `min_score`), a window is the driver's next K candidate ids (for `q`, already
  checked for every word, see `storage.search`);
- otherwise (the pending queue, tags) a window is the next K rows by storage position, whose
  ids bound the window (rows are appended in id order, so DuckDB's rowid gives positions
  cheaply; on Postgres the primary key's index counts them).

Windows grow until the page is full or the data is exhausted. The result never depends on the
window sizes, only the time does.

On Postgres a since/until range also bounds the ids every path reads by the smallest and
largest id of the range's rows (`storage.time_bounds`), and the positional windows start and
end there: an old day is read where its ids are, not after every newer row.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage.backend.dialect import DUCKDB, DuckDialect, dialect_of
from storage.claims import Claim, write_claim
from storage.db import Connection
from storage.feedback import min_score_condition, score_driver
from storage.interactions import InteractionFilter
from storage.lookup import Bounds, bounded, ids_condition
from storage.messages import REVIEWABLE_ENDPOINTS
from storage.review import STATES
from storage.search import DEFAULT_SCOPE, TermSearch, query_terms
from storage.search_budget import page_budget, too_broad
from storage.search_tail import DEFAULT_TAIL, TailLimits
from storage.tags import tag_condition
from storage.time_bounds import RangeIds, time_id_bounds
from storage.trainable import trainable_sql
from tuneloop.errors import SearchTooBroad

FIRST_WINDOW = 256
POSITION_GROWTH = 8
DRIVER_GROWTH = 4
DRIVER_FETCH_MAX = 4096  # above this DuckDB trades its early-stopping Top-N for a full sort
MAX_SCAN_PAGES = 50  # pages of candidates next_item looks through for an unclaimed one
_REVIEWABLE_SQL = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)

# (candidate ids newest first, where the next batch starts or None when the source ran out)
Driver = Callable[[Connection, str | None, int], tuple[list[str], str | None]]


@dataclass(frozen=True)
class ReviewQuery:
    base: InteractionFilter = field(default_factory=InteractionFilter)
    review: str | None = None
    tag: str | None = None
    q: str | None = None
    q_in: str = DEFAULT_SCOPE  # the fields q searches (storage.search.SCOPES)
    min_score: float | None = None
    # True: only items with a final answer (see storage.trainable); False: only those without
    trainable: bool | None = None
    # seconds a page of a `q` search may take (storage.search_budget); None: no limit (the
    # work of datasets and bulk actions), set from settings for what reviewers list
    search_budget_s: float | None = None
    tail: TailLimits = DEFAULT_TAIL  # the unindexed rows searched (storage.search_tail)

    def __post_init__(self) -> None:
        if self.review is not None and self.review not in STATES:
            raise ValueError(f"review must be one of {STATES}")

    @property
    def terms(self) -> list[str]:
        return query_terms(self.q) if self.q is not None else []

    def where(self, bounds: Bounds | None = None, *,
              d: DuckDialect = DUCKDB) -> tuple[str, list[Any]]:
        """Every condition but `q` (which its driver settles), on interactions aliased `i`;
        subqueries read only `bounds`."""
        sql, params = self.base.where("i")
        clauses, values = [sql], list(params)

        def add(clause: str, more: list[Any]) -> None:
            clauses.append(clause)
            values.extend(more)

        within, within_params = bounded("interaction_id", bounds)
        if self.review == "pending":
            add(f"i.endpoint IN ({_REVIEWABLE_SQL}) AND i.id NOT IN (SELECT interaction_id "
                f"FROM reviews WHERE state <> 'pending' AND {within})", within_params)
        elif self.review is not None:
            add(f"i.id IN (SELECT interaction_id FROM reviews WHERE state = ? AND {within})",
                [self.review, *within_params])
        if self.tag is not None:
            add(*tag_condition(self.tag, bounds=bounds))
        if self.min_score is not None:
            add(*min_score_condition(self.min_score, bounds=bounds))
        if self.trainable is not None:
            rule = trainable_sql(d, "i", within)
            add(rule if self.trainable else f"NOT {rule}", within_params * 3)
        return " AND ".join(clauses), values

    def driver(self, con: Connection) -> Driver | None:
        """A small source of candidate ids, when one of the filters has one."""
        if self.q is not None:
            return TermSearch(con, self.q, self.q_in, tail=self.tail).candidates
        if self.review not in (None, "pending"):
            state = self.review
            return lambda con, before, count: _complete(
                _reviews_driver(con, state, before, count), count)
        if self.min_score is not None:
            score = self.min_score
            return lambda con, before, count: _complete(
                score_driver(con, score, before, count), count)
        return None

    @property
    def plain(self) -> bool:
        """Only conditions on the interaction's own columns."""
        return self.review is None and self.tag is None and self.q is None \
            and self.min_score is None and self.trainable is None


def _complete(ids: list[str], count: int) -> tuple[list[str], str | None]:
    return ids, (ids[-1] if len(ids) == count else None)


def _reviews_driver(con: Connection, state: str, before: str | None, count: int) -> list[str]:
    sql, params = "SELECT interaction_id FROM reviews WHERE state = ?", [state]
    if before is not None:
        sql += " AND interaction_id < ?"
        params.append(before)
    rows = con.execute(sql + " ORDER BY interaction_id DESC LIMIT ?", [*params, count]).fetchall()
    return [r[0] for r in rows]


def _select(con: Connection, where: str, params: list[Any], count: int) -> list[str]:
    rows = con.execute(f"SELECT i.id FROM interactions i WHERE {where} "
                       "ORDER BY i.id DESC LIMIT ?", [*params, count]).fetchall()
    return [r[0] for r in rows]


def find_ids(con: Connection, query: ReviewQuery, *, limit: int,
             cursor: str | None = None) -> tuple[list[str], str | None]:
    """The ids of one page, newest first, and the cursor of the next page (or None)."""
    wanted = limit + 1
    span = time_id_bounds(con, query.base)
    if span is not None:
        if span.empty:
            return [], None
        query = dataclasses.replace(query, base=dataclasses.replace(
            query.base, extra_sql=(*query.base.extra_sql, span.sql())))
    if query.plain:
        where, params = query.where(d=dialect_of(con))
        if cursor is not None:
            where, params = f"{where} AND i.id < ?", [*params, cursor]
        found = _select(con, where, params, wanted)
    else:
        with page_budget(con, query.search_budget_s if query.q is not None else None):
            driver = query.driver(con)
            found = (_driven(con, query, driver, wanted, cursor) if driver is not None
                     else _positional(con, query, wanted, cursor, span))
    page = found[:limit]
    return page, (page[-1] if len(found) > limit else None)


def _driven(con: Connection, query: ReviewQuery, driver: Driver, wanted: int,
            before: str | None) -> list[str]:
    found: list[str] = []
    size = min(max(FIRST_WINDOW, 4 * wanted), DRIVER_FETCH_MAX)
    while len(found) < wanted:
        candidates, next_before = driver(con, before, size)
        if candidates:
            window, window_params = ids_condition("i.id", sorted(candidates))
            where, params = query.where(d=dialect_of(con),
                                        bounds=(min(candidates), max(candidates)))
            found += _select(con, f"{window} AND {where}", [*window_params, *params],
                             wanted - len(found))
        if next_before is None:
            break
        before = next_before
        size = min(size * DRIVER_GROWTH, DRIVER_FETCH_MAX)
    return found


def _position(con: Connection, before: str | None) -> int:
    if before is not None:
        rows = con.execute("SELECT rowid FROM interactions WHERE id = ?", [before]).fetchall()
        if rows:
            return int(rows[0][0])
    return int(con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]) - 1


def _id_near(con: Connection, position: int) -> str | None:
    """The smallest id among the rows stored around `position` (None: no row there)."""
    rows = con.execute("SELECT min(id) FROM interactions WHERE rowid BETWEEN ? AND ?",
                       [position, position + 63]).fetchall()
    return rows[0][0] if rows else None


def _window_lows(con: Connection, before: str | None,
                 span: RangeIds | None = None) -> Callable[[int], str | None]:
    """`low(size)`: the id about `size` rows below `before` in id order (None: fewer rows),
    counted within `span` (a time range's ids) if given. DuckDB answers by storage position
    (rowid); where rows have no position (Postgres), the primary key's index counts them (an
    index-only scan of `size` entries)."""
    if dialect_of(con).row_positions:
        top = _position(con, before)
        return lambda size: _id_near(con, top - size) if top - size > 0 else None
    limits = [("id < ?", before), ("id <= ?", span and span.high), ("id >= ?", span and span.low)]
    conditions = [(sql, value) for sql, value in limits if value is not None]
    below = "".join(f"WHERE {' AND '.join(sql for sql, _ in conditions)} " if conditions else "")
    params = [value for _, value in conditions]

    def low(size: int) -> str | None:
        rows = con.execute(f"SELECT id FROM interactions {below}ORDER BY id DESC "
                           "LIMIT 1 OFFSET ?", [*params, size]).fetchall()
        return rows[0][0] if rows else None
    return low


def _positional(con: Connection, query: ReviewQuery, wanted: int, before: str | None,
                span: RangeIds | None = None) -> list[str]:
    """`span`: the ids of the query's time range, where the windows start and end."""
    found: list[str] = []
    window_low = _window_lows(con, before, span)
    size = max(FIRST_WINDOW, 4 * wanted)
    upper = before  # exclusive
    while len(found) < wanted:
        low = window_low(size)  # inclusive
        size *= POSITION_GROWTH
        if low is not None and upper is not None and low >= upper:
            continue  # rows stored out of id order put this window above the cursor
        where, params = query.where(d=dialect_of(con), bounds=(low, upper))
        window, window_params = bounded("i.id", (low, None))
        if upper is not None:
            window, window_params = f"{window} AND i.id < ?", [*window_params, upper]
        found += _select(con, f"{window} AND {where}", [*window_params, *params],
                         wanted - len(found))
        if low is None:
            break
        upper = low
    return found


# -- the next item of a reviewer (claims: storage.claims) --------------------------------------
def _matches(con: Connection, query: ReviewQuery, interaction_id: str) -> bool:
    if query.q is not None:
        return False  # text search is settled by its driver; take a fresh item instead
    where, params = query.where(d=dialect_of(con), bounds=(interaction_id, interaction_id))
    return bool(con.execute(f"SELECT 1 FROM interactions i WHERE i.id = ? AND {where}",
                            [interaction_id, *params]).fetchall())


SEARCH_CANDIDATES = 8  # unclaimed matches a reader hands the writer for a text search


def search_candidates(con: Connection, query: ReviewQuery, reviewer: str, *,
                      skip: Sequence[str] = (), now: datetime | None = None) -> list[str]:
    """For `next_item` with a text search (`q`), run on a reader: the first matches no one
    else holds (nor skipped), newest first, at most `SEARCH_CANDIDATES`. The search (up to its
    page budget) then never runs on the single writer, where every save, claim and ingest
    batch queued behind it (r12v HIGH 2); the writer only re-checks them and claims one."""
    now = now or datetime.now(UTC)
    held = con.execute("SELECT interaction_id, reviewer FROM review_claims WHERE expires_at > ?",
                       [now]).fetchall()
    excluded = {r[0] for r in held if r[1] != reviewer} | set(skip)
    own = [r[0] for r in held if r[1] == reviewer and r[0] not in skip]
    # the reviewer's own claim first, if it matches (r12u MED 4: it was released for the
    # newest match unless it was that one, unlike without a search)
    found = TermSearch(con, query.q, query.q_in, tail=query.tail).matching(con, own) \
        if own and query.q else []
    for ids in budgeted_pages(con, query, min(len(excluded) + SEARCH_CANDIDATES, 1000)):
        found += [i for i in ids if i not in excluded and i not in found]
        if len(found) >= SEARCH_CANDIDATES:
            break
    return found[:SEARCH_CANDIDATES]


def budgeted_pages(con: Connection, query: ReviewQuery, size: int) -> Iterator[list[str]]:
    """The query's pages of `size` ids, newest first, at most MAX_SCAN_PAGES of them, all within
    its one search budget (if it has one): a page each, a long skip list made one `queue/next`
    take 50 budgets and hold a reader for a minute (r12u HIGH 1)."""
    deadline = None if query.search_budget_s is None \
        else time.monotonic() + query.search_budget_s
    cursor: str | None = None
    for _ in range(MAX_SCAN_PAGES):
        paged = query if deadline is None else dataclasses.replace(
            query, search_budget_s=max(deadline - time.monotonic(), 1e-9))
        try:
            ids, cursor = find_ids(con, paged, limit=size, cursor=cursor)
        except SearchTooBroad as exc:  # told with the whole budget, not what this page had
            raise too_broad(query.search_budget_s or 0.0) from exc.__cause__
        yield ids
        if cursor is None:
            return


def next_item(con: Connection, query: ReviewQuery, reviewer: str, ttl_s: float, *,
              skip: Sequence[str] = (), now: datetime | None = None,
              candidates: Sequence[str] | None = None) -> Claim | None:
    """Claim the reviewer's next item (see the module's docstring); None when none is left.
    `candidates`: a text search's matches found on a reader (`search_candidates`), claimed
    here if still unclaimed and still in the filter's review state (its words stay: an edit
    only adds words); when all were taken meanwhile the search runs here."""
    now = now or datetime.now(UTC)
    con.execute("DELETE FROM review_claims WHERE expires_at <= ?", [now])
    rows = con.execute("SELECT interaction_id, reviewer FROM review_claims").fetchall()
    own = [r[0] for r in rows if r[0] not in skip and r[1] == reviewer]
    chosen = next((i for i in own if _matches(con, query, i)), None)
    excluded = {r[0] for r in rows if r[1] != reviewer} | set(skip)
    if chosen is None and candidates:
        unsearched = dataclasses.replace(query, q=None)
        chosen = next((i for i in candidates
                       if i not in excluded and _matches(con, unsearched, i)), None)
    if chosen is None and candidates != []:
        chosen = _first_unclaimed(con, query, excluded)
    con.execute("DELETE FROM review_claims WHERE reviewer = ? AND interaction_id <> ?",
                [reviewer, chosen or ""])
    return None if chosen is None else write_claim(con, chosen, reviewer, now, ttl_s)


def _first_unclaimed(con: Connection, query: ReviewQuery, excluded: set[str]) -> str | None:
    # a page one longer than the excluded set holds an unclaimed item unless the data ends
    for ids in budgeted_pages(con, query, min(len(excluded) + 1, 1000)):
        for interaction_id in ids:
            if interaction_id not in excluded:
                return interaction_id
    return None
