"""The cost of `POST /v1/feedback`'s limit check (`feedback_max_per_key`): `add_feedback` as it
is now (count the key's entries on the interaction, then insert, in one store write) against
the bare insert it did before, same run, same store, with `--feedback` entries already stored
(the feedback table has no index: the count reads it whole).

    PYTHONPATH=$PWD python bench/feedback_limit.py [--feedback 200000] [--runs 200]
        [--store duckdb|postgres|both]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_queries import timed
from storage.backend import is_postgres
from storage.db import Connection
from storage.feedback import add_feedback
from storage.records import insert_interactions, to_arrow
from tests.store_support import connected

INTERACTIONS = 1000


def bare_insert(con: Connection, interaction_id: str) -> None:
    """add_feedback before the limit: the interaction's existence checked, one insert."""
    con.execute("SELECT 1 FROM interactions WHERE id = ?", [interaction_id]).fetchall()
    con.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                ["fb_" + secrets.token_hex(12), interaction_id, 1.0, None, "sk-abcd",
                 datetime.now(UTC)])


def seed(con: Connection, feedback: int) -> list[str]:
    ids = [f"{0x01900000 + k:08x}-0000-7000-8000-000000000000" for k in range(INTERACTIONS)]
    insert_interactions(con, to_arrow([{
        "id": i, "created_at": 1_790_000_000_000_000 + k, "endpoint": "chat.completions",
        "model": "gpt-4o-mini", "traffic": "production", "request": "{}", "response": "{}",
        "status_code": 200} for k, i in enumerate(ids)]))
    numbers = ("generate_series(0, CAST(? AS BIGINT) - 1) AS s(n)" if is_postgres(con)
               else "range(CAST(? AS BIGINT)) AS s(n)")
    # the entries of interaction n % INTERACTIONS (its id's hex digits), from 97 keys
    con.execute(
        "INSERT INTO feedback SELECT 'fb_seed' || CAST(n AS VARCHAR), "
        "lpad(to_hex(CAST(? AS BIGINT) + n % ?), 8, '0') || '-0000-7000-8000-000000000000', "
        "1.0, NULL, 'sk-' || CAST(n % 97 AS VARCHAR), ? FROM " + numbers,
        [0x01900000, INTERACTIONS, datetime.now(UTC), feedback])
    assert con.execute("SELECT count(*) FROM feedback WHERE interaction_id = ?",
                       [ids[1]]).fetchall()[0][0] == feedback // INTERACTIONS
    return ids


def measure(label: str, store: str, feedback: int, runs: int) -> None:
    with connected(store) as con:
        ids = seed(con, feedback)
        n = iter(range(10**9))

        def limited() -> None:  # a fresh key each call: never refused, always inserted
            add_feedback(con, ids[next(n) % INTERACTIONS], 1.0, None, f"k{next(n)}",
                         max_per_source=20)

        def before() -> None:
            bare_insert(con, ids[next(n) % INTERACTIONS])

        now_p50, now_p99 = timed(limited, runs)
        old_p50, old_p99 = timed(before, runs)
        print(f"{label:<9} with the limit {now_p50:6.2f} / {now_p99:6.2f} ms   bare insert "
              f"(before) {old_p50:6.2f} / {old_p99:6.2f} ms   x{now_p50 / old_p50:.2f}   "
              f"load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feedback", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--store", choices=["duckdb", "postgres", "both"], default="both")
    args = parser.parse_args()
    print(f"{args.feedback:,} feedback entries stored over {INTERACTIONS:,} interactions; "
          f"p50 / p99 of one call over {args.runs} runs")
    if args.store in ("duckdb", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            measure("DuckDB", str(Path(tmp) / "bench.duckdb"), args.feedback, args.runs)
    if args.store in ("postgres", "both"):
        from tests.pg_cluster import PgCluster

        cluster = PgCluster.start()
        try:
            measure("Postgres", cluster.create_database(), args.feedback, args.runs)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
