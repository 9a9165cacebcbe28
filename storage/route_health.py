"""Canary health: how each target of an alias did on production traffic since a time.

A request counts for the target the route drew for it (`route.primary`, or `route.target`
for rows logged before the proxy recorded the primary). It is an error when the upstream
answered 5xx, timed out or cut the answer, or when the drawn target failed and a fallback
served it (`route.attempt > 0`). 4xx answers (bad requests, rate limits) are the caller's or
the account's, not the model's, and don't count. Latency is over the answers below 400.
Evaluation and synthetic traffic never count. A request users rated is a thumbs-down when
the mean of its feedback scores is below 0 (the canary's sequential test uses both counts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.backend.dialect import dialect_of
from storage.db import Connection

_HEALTH_SQL = """
WITH r AS (
    SELECT id,
           coalesce(route ->> 'primary', route ->> 'target') AS target,
           status_code, finish, latency_ms,
           coalesce({attempt}, 0) AS attempt
    FROM interactions
    WHERE traffic = 'production' AND route ->> 'alias' = ? AND created_at >= ?
      AND created_at < ?
), rated AS (
    SELECT fb.interaction_id, avg(fb.score) AS mean
    FROM feedback fb JOIN r ON fb.interaction_id = r.id
    GROUP BY fb.interaction_id
), f AS (
    SELECT r.target, count(*) AS n, avg(fb.score) AS mean
    FROM feedback fb JOIN r ON fb.interaction_id = r.id
    GROUP BY r.target
), t AS (
    SELECT r.target, count(*) AS rated, count(*) FILTER (WHERE rated.mean < 0) AS down
    FROM rated JOIN r ON rated.interaction_id = r.id
    GROUP BY r.target
)
SELECT r.target,
       count(*) AS requests,
       count(*) FILTER (WHERE r.status_code >= 500 OR r.finish IN ('timeout', 'upstream_cut')
                        OR r.attempt > 0) AS errors,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_ms)
           FILTER (WHERE r.status_code < 400) AS p50,
       max(f.n) AS feedback_count,
       max(f.mean) AS feedback_mean,
       max(t.rated) AS rated,
       max(t.down) AS thumbs_down
FROM r LEFT JOIN f ON f.target = r.target LEFT JOIN t ON t.target = r.target
GROUP BY r.target
ORDER BY requests DESC, r.target
"""


def route_health(con: Connection, alias: str, since: datetime,
                 until: datetime) -> list[dict[str, Any]]:
    """Per target: requests, errors, error_rate, feedback_count, feedback_mean,
    rated_requests (requests with feedback), thumbs_down (of those, the ones whose mean score
    is below 0), latency_p50_ms, over production traffic for `alias` in [since, until)."""
    sql = _HEALTH_SQL.format(attempt=dialect_of(con).try_integer("route ->> 'attempt'"))
    rows = con.execute(sql, [alias, since, until]).fetchall()
    return [
        {
            "target": target,
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests if requests else 0.0,
            "feedback_count": feedback_count or 0,
            "feedback_mean": feedback_mean,
            "rated_requests": rated or 0,
            "thumbs_down": thumbs_down or 0,
            "latency_p50_ms": None if p50 is None else round(p50, 3),
        }
        for target, requests, errors, p50, feedback_count, feedback_mean, rated, thumbs_down
        in rows
    ]
