"""A reviewer's progress through the queue: exact counts, not "20+".

- `pending`: the items the queue would show (the query's filters, pending, with a final answer
  unless the query says otherwise);
- `untrainable`: pending items without a final answer (kept out of the default queue);
- `total`: reviewable items matching the filters, in any state;
- `claimed_by_others`: live claims of other reviewers (items they are working on now);
- `reviewed_by_you` / `reviewed`: items whose current state (not pending) was set since
  `since` (default: today, UTC midnight) by this reviewer / by anyone.

Without filters the first three are arithmetic on the small tables; with filters, one scan of
the interactions matching them, hash-joined to the small `reviews` and `untrainable` tables;
with a text query (`q`) they walk the term index's candidates instead, exact up to
MAX_TEXT_COUNT each and within a third of COUNT_SHARE of the query's search budget, if it has
one (`exact` says whether all were: past either, each is the count so far, a lower bound).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

from storage.backend.dialect import DuckDialect, dialect_of
from storage.db import Connection
from storage.messages import REVIEWABLE_ENDPOINTS
from storage.queue import ReviewQuery, find_ids
from storage.trainable import edited_answer_sql
from tuneloop.errors import SearchTooBroad

MAX_TEXT_COUNT = 100_000
COUNT_PAGE = 10_000
COUNT_SHARE = 0.25  # of the page budget, for the three text counts of a progress together
_REVIEWABLE_SQL = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)


def _text_count(con: Connection, query: ReviewQuery, deadline: float | None
                ) -> tuple[int, bool]:
    """The matches of a text query, walked in pages of COUNT_PAGE, exact up to MAX_TEXT_COUNT;
    past `deadline` (a time.monotonic(); None: none) the count so far, not exact. A count is
    no reason to refuse a reviewer (r12v HIGH 1), nor to hold a reader for seconds: eight
    concurrent counts of a common word on Postgres took 5-15 s each (r12v MED 3)."""
    counted, cursor = 0, None
    while counted < MAX_TEXT_COUNT:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return counted, False
        try:
            ids, cursor = find_ids(con, dataclasses.replace(query, search_budget_s=left),
                                   limit=min(COUNT_PAGE, MAX_TEXT_COUNT - counted),
                                   cursor=cursor)
        except SearchTooBroad:
            return counted, False
        counted += len(ids)
        if cursor is None:
            return counted, True
    return counted, False


def _trainable(d: DuckDialect) -> str:
    return (f"(CASE WHEN r.messages IS NOT NULL THEN "
            f"coalesce({edited_answer_sql(d, 'r.messages')}, FALSE) "
            "ELSE u.interaction_id IS NULL END)")


_PENDING = "coalesce(r.state, 'pending') = 'pending'"


def _counts(con: Connection, query: ReviewQuery) -> tuple[int, int, int]:
    """(reviewable items matching the filters, pending ones with a final answer, pending ones
    without). Without filters: arithmetic on the small tables (the answerless and the edited
    rows, the reviewed ones) and one count of the interaction column; with filters, one scan of
    the matching interactions hash-joined to `reviews` and `untrainable`."""
    d = dialect_of(con)
    where, params = dataclasses.replace(query, review=None, trainable=None).where(d=d)
    if where == "TRUE" and not params:
        total, reviewed = con.execute(
            f"SELECT (SELECT count(*) FROM interactions WHERE endpoint IN ({_REVIEWABLE_SQL})), "
            "(SELECT count(*) FROM reviews WHERE state <> 'pending')").fetchall()[0]
        # pending without an answer: logged so and never edited, plus edited without one
        logged, edited = con.execute(
            "SELECT (SELECT count(*) FROM untrainable u WHERE NOT EXISTS (SELECT 1 FROM "
            "reviews r WHERE r.interaction_id = u.interaction_id AND (r.state <> 'pending' OR "
            "r.messages IS NOT NULL))), "
            "(SELECT count(*) FROM reviews r WHERE state = 'pending' AND messages IS NOT NULL "
            f"AND NOT coalesce({edited_answer_sql(d, 'r.messages')}, FALSE))").fetchall()[0]
        untrainable = int(logged) + int(edited)
        return int(total), int(total) - int(reviewed) - int(untrainable), int(untrainable)
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {_PENDING} AND {_trainable(d)}), "
        f"count(*) FILTER (WHERE {_PENDING} AND NOT {_trainable(d)}) FROM interactions i "
        "LEFT JOIN reviews r ON r.interaction_id = i.id "
        "LEFT JOIN untrainable u ON u.interaction_id = i.id "
        f"WHERE i.endpoint IN ({_REVIEWABLE_SQL}) AND {where}", params).fetchall()[0]
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


def start_of_day(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def progress(con: Connection, query: ReviewQuery, reviewer: str, *,
             since: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = since or start_of_day(now)
    # each text count gets a third of COUNT_SHARE of the query's page budget (_text_count): a
    # step of the queue waited the whole budget on a common word (r12u MED 3), and one count
    # spending it all left the others at 0, "10,000 of 0 pending" (MED 2)
    budget = query.search_budget_s
    share = None if budget is None else budget * COUNT_SHARE / 3

    def deadline() -> float | None:
        return None if share is None else time.monotonic() + share

    query = dataclasses.replace(query, search_budget_s=None)
    pending_query = dataclasses.replace(query, review="pending")
    exact = True
    if query.q is None:
        total, answered, untrainable = _counts(con, query)
        wanted = pending_query.trainable
        pending = answered if wanted is True else untrainable if wanted is False \
            else answered + untrainable
    else:
        pending, exact = _text_count(con, pending_query, deadline())
        untrainable, exact_u = _text_count(
            con, dataclasses.replace(pending_query, trainable=False), deadline())
        total, exact_t = _text_count(con, dataclasses.replace(query, review=None,
                                                              trainable=None), deadline())
        exact = exact and exact_u and exact_t
        if not exact:  # lower bounds each: never fewer in all than pending
            total = max(total, pending + (untrainable if pending_query.trainable is True
                                          else 0))
    by_you, by_all = con.execute(
        "SELECT count(*) FILTER (WHERE reviewer = ?), count(*) FROM reviews "
        "WHERE updated_at >= ? AND state <> 'pending'", [reviewer, since]).fetchall()[0]
    others = con.execute("SELECT count(*) FROM review_claims WHERE expires_at > ? "
                         "AND reviewer <> ?", [now, reviewer]).fetchall()[0][0]
    return {
        "pending": pending, "untrainable": untrainable, "total": total,
        "claimed_by_others": int(others), "reviewed_by_you": int(by_you or 0),
        "reviewed": int(by_all or 0), "since": since.isoformat(), "exact": exact,
    }
