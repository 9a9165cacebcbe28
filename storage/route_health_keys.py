"""Route health per client key (`route_health(..., by_key=True)`, storage/route_health.py):
what the canary's strata read (exporter/canary_strata.py). Each key's weighed trials and
failures, its judged requests (each once) and its `counted` (those, a sticky user's up to
`COUNTED_PER_USER` x `max_requests_per_user`: what `min_requests` counts), all its rows, its
part of the missing rows, how its judged requests were spread over the window
(`judged_parts`), and each target's first row.

A key is the row's `route.client_key` (a digest of the checked credential), or, for an issued
key of a rotation chain, the chain's `stratum` (storage/keys.py `rotate_key`): the shared
health CTEs map it, so the chain is one key everywhere the health counts per key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from storage.db import Connection

HISTORY_PARTS = 24
"""`by_key`'s `judged_parts`: the window from its first row to `until` cut in this many equal
parts (the hours of a day-long canary history), each key's judged requests in each."""

_BY_KEY_TAIL = """, bk AS (
    SELECT target, client_key, n, x, a,
           sum(n) OVER (PARTITION BY target, cluster) AS cn,
           sum(a) OVER (PARTITION BY cluster) AS ca
    FROM kc
)
SELECT bk.target, bk.client_key,
       sum(CASE WHEN cn > 0 THEN n * least(1.0, CAST(? AS DOUBLE PRECISION) / cn) ELSE 0 END),
       sum(CASE WHEN cn > 0 THEN x * least(1.0, CAST(? AS DOUBLE PRECISION) / cn) ELSE 0 END),
       sum(a * least(1.0, CAST(? AS DOUBLE PRECISION) / ca)),
       max(least(keyed.m, keyed.j, CAST(? AS DOUBLE PRECISION))),
       sum(n),
       sum(least(CAST(n AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION)))
FROM bk JOIN keyed ON keyed.target = bk.target AND keyed.client_key = bk.client_key
GROUP BY bk.target, bk.client_key
"""

_PARTS_TAIL = """, z AS (SELECT min(at_us) AS t0 FROM r)
SELECT r.target, coalesce(r.client_key, '') AS client_key,
       least({parts} - 1, {part}) AS part, count(*)
FROM r, z
WHERE r.excused = 0
GROUP BY 1, 2, 3
"""

_FIRST_SQL = """
SELECT coalesce(route ->> 'primary', route ->> 'target') AS target, min(created_at)
FROM interactions
WHERE traffic = 'production' AND route ->> 'alias' = ? AND created_at >= ? AND created_at < ?
GROUP BY 1
"""


def add_by_key(con: Connection, health: list[dict[str, Any]], ctes: str,
               fields: dict[str, str], params: list[Any], per_user: float,
               counted_per_user: float, part: str, alias: str, since: datetime,
               until: datetime) -> None:
    """Give each health row its `by_key` and `first_at` (storage/route_health.py
    `route_health`): `ctes` and `params` the health query's, `part` the SQL of a row's part
    of the window (from `at_us` and `t0`, the window's first row, and `until` in epoch us)."""
    keyed: dict[str, dict[str, dict[str, Any]]] = {}
    for target, key, trials, failures, traffic, missing, judged, counted in con.execute(
            (ctes + _BY_KEY_TAIL).format(**fields),
            [*params, *[per_user] * 4, counted_per_user]).fetchall():
        keyed.setdefault(target, {})[key] = {
            "trials": round(float(trials or 0), 6),
            "judged": int(judged or 0),
            "counted": round(float(counted or 0), 6),
            "failures": round(float(failures or 0), 6),
            "traffic": round(float(traffic or 0), 6),
            "missing": round(float(missing or 0), 6),
            "judged_parts": [0] * HISTORY_PARTS}
    parts_sql = (ctes + _PARTS_TAIL).format(**fields, parts=HISTORY_PARTS, part=part)
    until_us = round(_aware(until).timestamp() * 1_000_000)
    for target, key, n, judged in con.execute(parts_sql, [*params, until_us]).fetchall():
        counts = keyed.get(target, {}).get(key)
        if counts is not None and 0 <= int(n) < HISTORY_PARTS:
            counts["judged_parts"][int(n)] += int(judged)
    firsts = {target: _utc(first) for target, first in con.execute(
        _FIRST_SQL, [alias, since, until]).fetchall()}
    for row in health:
        row["by_key"] = keyed.get(row["target"], {})
        row["first_at"] = firsts.get(row["target"])


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return _aware(moment).astimezone(UTC).isoformat()
