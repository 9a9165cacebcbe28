"""The review queue and browse queries: interactions with their review state, newest first.

Filters on the interaction's own columns are one DuckDB Top-N query, which stops early because
rows are stored in id (time) order. Filters that live in other tables (review state, reviewer
tags, feedback score, text search) would make DuckDB join all rows before the Top-N, so they
are answered in id windows instead: a "driver" (the term index for `q`, the reviews table for
a reviewed state, else the interactions matching the plain filters) gives the newest K
candidate ids below the cursor; every condition is then checked only inside that id window,
where DuckDB skips other row groups by their min/max statistics. Windows grow 8x until the
page is full or the driver is exhausted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage.db import Connection
from storage.feedback import feedback_of, feedback_summary, min_score_condition
from storage.interactions import InteractionFilter, fetch_items, get_interaction
from storage.lookup import ids_condition
from storage.messages import REVIEWABLE_ENDPOINTS, is_reviewable, messages_of
from storage.records import COLUMNS
from storage.review import STATES, review_states, revisions_of
from storage.search import query_terms, term_condition, term_driver
from storage.tags import effective_tags, tag_condition

FIRST_WINDOW = 256
WINDOW_GROWTH = 8
LIST_IDS_UP_TO = 10_000
_REVIEWABLE_SQL = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)

Driver = Callable[[Connection, str | None, int], list[str]]


@dataclass(frozen=True)
class ReviewQuery:
    base: InteractionFilter = field(default_factory=InteractionFilter)
    review: str | None = None
    tag: str | None = None
    q: str | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        if self.review is not None and self.review not in STATES:
            raise ValueError(f"review must be one of {STATES}")

    @property
    def terms(self) -> list[str]:
        return query_terms(self.q) if self.q is not None else []

    def where(self, bounds: tuple[str, str] | None = None) -> tuple[str, list[Any]]:
        """Every condition, on interactions aliased `i`."""
        sql, params = self.base.where("i")
        clauses, values = [sql], list(params)

        def add(clause: str, more: list[Any]) -> None:
            clauses.append(clause)
            values.extend(more)

        if self.review == "pending":
            add(f"i.endpoint IN ({_REVIEWABLE_SQL}) AND i.id NOT IN "
                "(SELECT interaction_id FROM reviews WHERE state <> 'pending')", [])
        elif self.review is not None:
            add("i.id IN (SELECT interaction_id FROM reviews WHERE state = ?)", [self.review])
        if self.tag is not None:
            add(*tag_condition(self.tag))
        if self.min_score is not None:
            add(*min_score_condition(self.min_score))
        for term in self.terms:
            add(*term_condition(term, bounds=bounds))
        return " AND ".join(clauses), values

    def driver(self) -> Driver | None:
        """Where candidates come from; None when the plain filters are all there is."""
        if self.review not in (None, "pending"):
            state = self.review
            return lambda con, before, count: _reviews_driver(con, state, before, count)
        if self.q is not None:
            term = self.terms[0]
            return lambda con, before, count: term_driver(con, term, before, count)
        if self.min_score is not None or self.review == "pending" or self.tag is not None:
            return self._base_driver
        return None

    def _base_driver(self, con: Connection, before: str | None, count: int) -> list[str]:
        where, params = self.base.where("i")
        if self.review == "pending":
            where += f" AND i.endpoint IN ({_REVIEWABLE_SQL})"
        return _newest_ids(con, where, params, before, count)


def _newest_ids(con: Connection, where: str, params: list[Any], before: str | None,
                count: int) -> list[str]:
    if before is not None:
        where += " AND i.id < ?"
        params = [*params, before]
    rows = con.execute(f"SELECT i.id FROM interactions i WHERE {where} "
                       "ORDER BY i.id DESC LIMIT ?", [*params, count]).fetchall()
    return [r[0] for r in rows]


def _reviews_driver(con: Connection, state: str, before: str | None, count: int) -> list[str]:
    sql, params = "SELECT interaction_id FROM reviews WHERE state = ?", [state]
    if before is not None:
        sql += " AND interaction_id < ?"
        params.append(before)
    rows = con.execute(sql + " ORDER BY interaction_id DESC LIMIT ?", [*params, count]).fetchall()
    return [r[0] for r in rows]


def find_ids(con: Connection, query: ReviewQuery, *, limit: int,
             cursor: str | None = None) -> tuple[list[str], str | None]:
    """The ids of one page, newest first, and the cursor of the next page (or None)."""
    driver = query.driver()
    if driver is None:
        where, params = query.where()
        found = _newest_ids(con, where, params, cursor, limit + 1)
    else:
        found = _windowed(con, query, driver, limit + 1, cursor)
    page = found[:limit]
    return page, (page[-1] if len(found) > limit else None)


def _windowed(con: Connection, query: ReviewQuery, driver: Driver, wanted: int,
              before: str | None) -> list[str]:
    found: list[str] = []
    window = max(FIRST_WINDOW, 4 * wanted)
    while len(found) < wanted:
        candidates = driver(con, before, window)
        if not candidates:
            break
        exhausted = len(candidates) < window
        low, high = candidates[-1], candidates[0]
        where, params = query.where(bounds=(low, high))
        if exhausted and len(candidates) <= LIST_IDS_UP_TO:
            window_sql, window_params = ids_condition("i.id", candidates)
        else:
            window_sql, window_params = "i.id BETWEEN ? AND ?", [low, high]
        rows = con.execute(
            f"SELECT i.id FROM interactions i WHERE {window_sql} AND {where} "
            "ORDER BY i.id DESC LIMIT ?", [*window_params, *params, wanted - len(found)],
        ).fetchall()
        found.extend(r[0] for r in rows)
        if exhausted:
            break
        before = low
        window *= WINDOW_GROWTH
    return found


def _with_review(con: Connection, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add review state, current messages, effective tags and feedback to interaction rows."""
    ids = [item["id"] for item in items]
    states = review_states(con, ids)
    scores = feedback_summary(con, ids)
    tags = effective_tags(con, {item["id"]: item.get("tags") for item in items})
    for item in items:
        state = states.get(item["id"])
        reviewable = is_reviewable(item["endpoint"])
        item["reviewable"] = reviewable
        item["review"] = state["review"] if state else ("pending" if reviewable else None)
        item["revision"] = state["revision"] if state else 0
        item["reviewed_by"] = state["reviewed_by"] if state else None
        item["reviewed_at"] = state["reviewed_at"] if state else None
        item["logged_tags"] = item.get("tags") or []
        item["tags"] = tags[item["id"]]
        item["score"] = scores.get(item["id"], {}).get("score")
        item["feedback_count"] = scores.get(item["id"], {}).get("feedback_count", 0)
        original, alternatives = (messages_of(item["endpoint"], item.get("request"),
                                              item.get("response"))
                                  if reviewable else (None, []))
        item["original"], item["alternatives"] = original, alternatives
        edited = state["messages"] if state else None
        item["edited"] = edited is not None
        item["messages"] = edited if edited is not None else original
    return items


def list_review_items(con: Connection, query: ReviewQuery, *, limit: int = 50,
                      cursor: str | None = None, compact: bool = False
                      ) -> tuple[list[dict[str, Any]], str | None]:
    ids, next_cursor = find_ids(con, query, limit=limit, cursor=cursor)
    if not ids:
        return [], next_cursor
    where, params = ids_condition("id", ids)
    rows = fetch_items(con, f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE {where} "
                       "ORDER BY id DESC", params)
    items = _with_review(con, rows)
    for item in items:
        item.pop("original", None)
        item.pop("alternatives", None)
        if compact:
            item.pop("request", None)
            item.pop("response", None)
    return items, next_cursor


def review_item(con: Connection, interaction_id: str) -> dict[str, Any]:
    """One interaction as logged, its original and current message lists, its revisions."""
    item = _with_review(con, [get_interaction(con, interaction_id)])[0]
    item["current"] = item["messages"]
    item["revisions"] = revisions_of(con, interaction_id) if item["revision"] else []
    item["feedback"] = feedback_of(con, interaction_id)
    return item
