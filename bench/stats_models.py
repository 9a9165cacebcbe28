"""GET /admin/stats with client-chosen model names (review r12y LOW 6): `review_stats` with
its model cap (`stats_top_models`, 30: the top models leave the database, the rest one summed
row) against the same call uncapped (every model's row leaves it, as before), same run, same
data, on a new DuckDB file and a throwaway Postgres (tests/pg_cluster.py).

    PYTHONPATH=$PWD python bench/stats_models.py [--models 30000] [--rows 30000] [--runs 5]
        [--store duckdb|postgres|both]

Seeded: `--models` interactions each with a random 40-character model and 2 of 64 random tags
(the probe's shape), plus `--rows` ordinary ones over 3 models. Times are warm p50 / p99 of
the storage call (what the admin API's handler runs), and the answer's JSON size.
"""

from __future__ import annotations

import argparse
import os
import random
import string
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_queries import timed
from storage.db import Connection
from storage.records import insert_interactions, to_arrow
from storage.stats import TOP_MODELS, review_stats
from tests.store_support import connected

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def rows(models: int, ordinary: int, rng: random.Random) -> list[dict[str, Any]]:
    tags = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(64)]
    names = ["".join(rng.choices(string.ascii_letters + string.digits, k=40))
             for _ in range(models)] + [rng.choice(["gpt-4o-mini", "gpt-4o", "ft:a::v1"])
                                       for _ in range(ordinary)]
    rng.shuffle(names)
    return [{"id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
             "created_at": int((T0 + timedelta(seconds=k)).timestamp() * 1_000_000),
             "endpoint": "chat.completions", "model": model, "traffic": "production",
             "request": '{"messages": [{"role": "user", "content": "hi"}]}',
             "response": '{"choices": [{"index": 0, "message": {"role": "assistant", '
                         '"content": "hello"}}]}',
             "status_code": 200, "prompt_tokens": 10, "completion_tokens": 5,
             "tags": rng.sample(tags, 2)} for k, model in enumerate(names)]


def measure(label: str, store: str, data: list[dict[str, Any]], runs: int) -> None:
    with connected(store) as con:
        for start in range(0, len(data), 10_000):
            insert_interactions(con, to_arrow(data[start:start + 10_000]))
        line = f"{label:<9}"
        results = []
        for name, top in (("capped", TOP_MODELS), ("uncapped", 10**9)):
            call = partial(review_stats, con, top_models=top)
            p50, p99 = timed(call, runs)
            answer = call()
            size = len(orjson.dumps(answer))
            results.append((p50, size))
            line += (f"  {name} {p50:7.1f} / {p99:7.1f} ms, {size / 1024:8.1f} KB, "
                     f"{len(answer['by_model']):6d} by_model rows")
        check_sums(con)
        print(f"{line}   x{results[1][0] / results[0][0]:.1f} time, "
              f"x{results[1][1] / results[0][1]:.0f} size   load {os.getloadavg()[0]:.1f}",
              flush=True)


def check_sums(con: Connection) -> None:
    answer = review_stats(con)
    assert sum(r["total"] for r in answer["by_model"]) == answer["totals"]["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=30_000)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store", choices=["duckdb", "postgres", "both"], default="both")
    args = parser.parse_args()
    data = rows(args.models, args.rows, random.Random(6))
    print(f"{args.models:,} distinct random models + {args.rows:,} rows over 3 models; "
          f"p50 / p99 over {args.runs} warm runs")
    if args.store in ("duckdb", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            measure("DuckDB", str(Path(tmp) / "bench.duckdb"), data, args.runs)
    if args.store in ("postgres", "both"):
        from tests.pg_cluster import PgCluster

        cluster = PgCluster.start()
        try:
            measure("Postgres", cluster.create_database(), data, args.runs)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
