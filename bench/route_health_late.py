"""The canary's health query with background second opinions (storage/route_health.py): what
judging rows by their `probe` rows costs, against the same query with no probe rows read.

    PYTHONPATH=$PWD python bench/route_health_late.py [--rows N] [--late-share F]

Seeds N production rows of one alias with an open canary (half per arm, 5% failures, sticky
users) into a DuckDB file, `--late-share` of them (default 2%) with `route.late_opinion`
`asked` and a probe row each (half answered), plus N other rows of another alias. Times
`route_health` over the alias and the baseline (warm, p50 of 21, run in alternation): the
same SQL with the probe rows' scan left out (the late CTE reads nothing), the query as it was
before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import route_health as health_module
from storage.db import Connection, connect
from storage.migrations import migrate
from storage.records import INTERACTION_SCHEMA, insert_interactions

ALIAS, CANARY, STABLE = "support-bot", "ft:canary", "gpt-4o-mini"


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [r.get(name) for r in rows] for name in INTERACTION_SCHEMA.names}
    return pa.table(columns, schema=INTERACTION_SCHEMA)


def seed(con: Connection, n: int, late_share: float, rng: np.random.Generator) -> int:
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    probes = 0
    for chunk in range(0, n, 50_000):
        rows: list[dict[str, Any]] = []
        for i in range(chunk, min(n, chunk + 50_000)):
            arm = CANARY if i % 2 else STABLE
            late = rng.random() < late_share
            route: dict[str, Any] = {"alias": ALIAS, "target": arm, "primary": arm,
                                     "role": "primary", "attempt": 0, "draw": "sticky"}
            status, finish = (500, "upstream_error") if rng.random() < 0.05 else (200,
                                                                                   "completed")
            if late:
                route["late_opinion"] = "asked"
                status, finish = None, "client_disconnected"
            base = {"id": f"i{i:09d}", "created_at": start + i * 1000, "endpoint": "chat",
                    "model": ALIAS, "upstream_model": arm, "provider": "openai",
                    "traffic": "production", "request": "{}", "latency_ms": 100.0,
                    "stream": False, "tags": [], "user_id": f"u{i % 5000}"}
            rows.append({**base, "route": orjson.dumps(route).decode(),
                         "status_code": status, "finish": finish})
            rows.append({**base, "id": f"o{i:09d}", "model": "other", "route": orjson.dumps(
                {"alias": "other", "target": "m", "role": "primary"}).decode(),
                "status_code": 200, "finish": "completed"})
            if late:
                other = STABLE if arm == CANARY else CANARY
                answered = rng.random() < 0.5
                rows.append({**base, "id": f"p{i:09d}", "created_at": start + i * 1000 + 500,
                             "traffic": "probe", "source_id": base["id"],
                             "upstream_model": other,
                             "route": orjson.dumps({"alias": ALIAS, "target": other,
                                                    "role": "second_opinion"}).decode(),
                             "status_code": 200 if answered else None,
                             "finish": "completed" if answered else "timeout"})
                probes += 1
        insert_interactions(con, _table(rows))
    return probes


def timed_pair(first: Any, second: Any, repeat: int = 21) -> tuple[float, float]:
    """Median ms of each, run in alternation (a busy machine slows both alike)."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for run, into in ((first, times[0]), (second, times[1])):
            began = time.perf_counter()
            run()
            into.append((time.perf_counter() - began) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--late-share", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "bench.duckdb")
        migrate(con)
        probes = seed(con, args.rows, args.late_share, np.random.default_rng(7))
        since, until = datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
        new_sql = health_module._HEALTH_SQL
        baseline_sql = new_sql.replace("WHERE traffic = 'probe'",
                                       "WHERE false AND traffic = 'probe'")
        assert baseline_sql != new_sql

        def run(sql: str) -> list[dict[str, Any]]:
            health_module._HEALTH_SQL = sql
            try:
                return health_module.route_health(con, ALIAS, since, until, canary=CANARY)
            finally:
                health_module._HEALTH_SQL = new_sql

        judged = {r["target"]: (r["requests"], r["errors"]) for r in run(new_sql)}
        new_ms, base_ms = timed_pair(lambda: run(new_sql), lambda: run(baseline_sql))
        print(f"rows: {args.rows:,} of the alias (+{args.rows:,} of another, {probes:,} probes)")
        print(f"judged (requests, errors) per arm: {judged}")
        print(f"route_health with probe rows: {new_ms:.1f} ms p50")
        print(f"baseline, no probe rows read:  {base_ms:.1f} ms p50")
        print(f"ratio: {new_ms / base_ms:.2f}x")


if __name__ == "__main__":
    main()
