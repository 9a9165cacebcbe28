"""A reviewer's progress through the queue: exact counts, not "20+".

- `pending`: the items the queue would show (the query's filters, pending, with a final answer
  unless the query says otherwise);
- `untrainable`: pending items without a final answer (kept out of the default queue);
- `total`: reviewable items matching the filters, in any state;
- `claimed_by_others`: live claims of other reviewers (items they are working on now);
- `reviewed_by_you` / `reviewed`: items whose current state (not pending) was set since
  `since` (default: today, UTC midnight) by this reviewer / by anyone.

Counts are one aggregate per number over the interaction columns and the small review tables;
with a text query (`q`) the pending count walks the term index's candidates instead, exact up
to MAX_TEXT_COUNT (`exact` says whether the limit was reached).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from storage.db import Connection
from storage.messages import REVIEWABLE_ENDPOINTS
from storage.queue import ReviewQuery, find_ids

MAX_TEXT_COUNT = 100_000
_REVIEWABLE_SQL = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)


def _count(con: Connection, query: ReviewQuery) -> tuple[int, bool]:
    if query.q is not None:
        ids, more = find_ids(con, query, limit=MAX_TEXT_COUNT)
        return len(ids), more is None
    where, params = query.where()
    rows = con.execute(f"SELECT count(*) FROM interactions i WHERE {where}", params).fetchall()
    return int(rows[0][0]), True


def start_of_day(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def progress(con: Connection, query: ReviewQuery, reviewer: str, *,
             since: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = since or start_of_day(now)
    pending_query = dataclasses.replace(query, review="pending")
    pending, exact = _count(con, pending_query)
    untrainable = pending if pending_query.trainable is False else 0
    if pending_query.trainable is not False:
        untrainable, exact_u = _count(con, dataclasses.replace(pending_query, trainable=False))
        exact = exact and exact_u
    any_state = dataclasses.replace(query, review=None, trainable=None)
    if any_state.q is None:
        where, params = any_state.where()
        total = int(con.execute(
            f"SELECT count(*) FROM interactions i WHERE {where} "
            f"AND i.endpoint IN ({_REVIEWABLE_SQL})", params).fetchall()[0][0])
    else:
        total, exact_t = _count(con, any_state)
        exact = exact and exact_t
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
