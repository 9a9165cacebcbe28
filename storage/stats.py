"""Review statistics: counts by state over time, by model and tag, token lengths, throughput.

Pending counts are derived (reviewable interactions minus those in another state) so that no
query joins every interaction with the reviews table; the reviews table carries the
interaction's creation time and model for that purpose.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from storage.db import Connection
from storage.messages import REVIEWABLE_ENDPOINTS
from storage.review import STATES

_REVIEWABLE = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)
TOP_TAGS = 30


def _range(column: str, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    clauses, params = ["TRUE"], []
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(until)
    return " AND ".join(clauses), params


def _by_state(totals: dict[Any, int], reviewed: list[tuple[Any, str, int]],
              key_name: str) -> list[dict[str, Any]]:
    """Rows of {key, pending, approved, rejected, needs_work, total}."""
    counts: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATES, 0))
    for key, total in totals.items():
        counts[key]["total"] = total
    for key, state, count in reviewed:
        counts[key][state] += count
    rows = []
    for key, row in counts.items():
        total = row.pop("total", 0)
        # an item undone back to pending has a reviews row; it is counted once, in the total
        row["pending"] = max(0, total - sum(row[s] for s in STATES if s != "pending"))
        rows.append({key_name: key, **row, "total": sum(row.values())})
    return rows


def review_stats(con: Connection, since: datetime | None = None,
                 until: datetime | None = None) -> dict[str, Any]:
    i_where, i_params = _range("created_at", since, until)
    i_where += f" AND endpoint IN ({_REVIEWABLE})"
    r_where, r_params = _range("interaction_created_at", since, until)

    def grouped(i_key: str, r_key: str) -> tuple[dict[Any, int], list[tuple[Any, str, int]]]:
        totals = dict(con.execute(f"SELECT {i_key} AS k, count(*) FROM interactions "
                                  f"WHERE {i_where} GROUP BY k", i_params).fetchall())
        reviewed = con.execute(f"SELECT {r_key} AS k, state, count(*) FROM reviews "
                               f"WHERE {r_where} GROUP BY k, state", r_params).fetchall()
        return totals, [(k, s, c) for k, s, c in reviewed]

    day = "strftime(date_trunc('day', {}), '%Y-%m-%d')"
    by_day = _by_state(*grouped(day.format("created_at"), day.format("interaction_created_at")),
                       "day")
    by_model = _by_state(*grouped("coalesce(model, '')", "coalesce(model, '')"), "model")
    overall = _by_state(*grouped("'all'", "'all'"), "all")
    totals = overall[0] if overall else {**dict.fromkeys(STATES, 0), "total": 0}
    totals.pop("all", None)
    not_reviewable = con.execute(
        f"SELECT count(*) FROM interactions WHERE {_range('created_at', since, until)[0]} "
        f"AND endpoint NOT IN ({_REVIEWABLE})", _range("created_at", since, until)[1]
    ).fetchall()[0][0]
    return {
        "totals": {**totals, "not_reviewable": not_reviewable},
        "by_day": sorted(by_day, key=lambda r: r["day"]),
        "by_model": sorted(by_model, key=lambda r: -r["total"]),
        "by_tag": _by_tag(con, i_where, i_params),
        "token_histogram": _token_histogram(con, i_where, i_params),
        "reviewers": _reviewers(con, since, until),
        "feedback": _feedback(con, since, until),
    }


def _by_tag(con: Connection, i_where: str, i_params: list[Any]) -> list[dict[str, Any]]:
    rows = con.execute(
        f"""
        WITH logged AS (
            SELECT id, unnest(tags) AS tag FROM interactions WHERE {i_where} AND len(tags) > 0
        ), effective AS (
            (SELECT id, tag FROM logged
             UNION SELECT t.interaction_id, t.tag FROM interaction_tags t WHERE NOT t.removed)
            EXCEPT SELECT interaction_id, tag FROM interaction_tags WHERE removed
        ), top AS (
            SELECT tag FROM effective GROUP BY tag ORDER BY count(*) DESC, tag LIMIT {TOP_TAGS}
        )
        SELECT e.tag, coalesce(r.state, 'pending') AS state, count(*)
        FROM effective e LEFT JOIN reviews r ON r.interaction_id = e.id
        WHERE e.tag IN (SELECT tag FROM top) GROUP BY 1, 2
        """, i_params).fetchall()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATES, 0))
    for tag, state, count in rows:
        counts[tag][state] += count
    result = [{"tag": tag, **row, "total": sum(row.values())} for tag, row in counts.items()]
    return sorted(result, key=lambda r: (-r["total"], r["tag"]))


def _token_histogram(con: Connection, i_where: str, i_params: list[Any]) -> list[dict[str, Any]]:
    """Prompt + completion tokens in power-of-two buckets: [0, 64), [64, 128), ..."""
    rows = con.execute(
        f"""
        SELECT CASE WHEN t < 64 THEN 0 ELSE CAST(pow(2, floor(log2(t))) AS BIGINT) END AS low,
               count(*)
        FROM (SELECT coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) AS t
              FROM interactions WHERE {i_where})
        GROUP BY low ORDER BY low
        """, i_params).fetchall()
    return [{"low": low, "high": 64 if low == 0 else low * 2, "count": count}
            for low, count in rows]


def _reviewers(con: Connection, since: datetime | None,
               until: datetime | None) -> list[dict[str, Any]]:
    where, params = _range("created_at", since, until)
    rows = con.execute(
        f"SELECT reviewer, strftime(date_trunc('day', created_at), '%Y-%m-%d') AS day, action, "
        f"count(*) FROM review_revisions WHERE {where} GROUP BY ALL ORDER BY day, reviewer",
        params).fetchall()
    return [{"reviewer": r, "day": d, "action": a, "count": c} for r, d, a, c in rows]


def _feedback(con: Connection, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    where, params = _range("created_at", since, until)
    count, mean, positive, negative = con.execute(
        f"SELECT count(*), avg(score), count(*) FILTER (score > 0), count(*) FILTER (score < 0) "
        f"FROM feedback WHERE {where}", params).fetchall()[0]
    return {"count": count, "mean_score": mean, "positive": positive, "negative": negative}
