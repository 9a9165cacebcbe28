"""A since/until review list on Postgres: the walk from the newest id (before, issue 12)
against the walk within the range's id bounds (storage/time_bounds.py), same run, same data.

    PYTHONPATH=$PWD python bench/pg_time_range.py --db postgresql://... [--rows N] [--runs R]

The database is seeded as bench/review_queries.py seeds it (an empty one; a seeded one is
reused). "before" issues the statement the plain list issued before (the filter, then
`ORDER BY i.id DESC LIMIT 51`); "after" is `find_ids`, bounds included. Times are warm p50.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_queries import _reload, open_bench_store, seed, seed_reviews, timed
from storage.db import Connection
from storage.interactions import InteractionFilter
from storage.items import list_review_items
from storage.queue import ReviewQuery, find_ids


def old_walk(con: Connection, query: ReviewQuery) -> list[str]:
    where, params = query.where()
    return [r[0] for r in con.execute(f"SELECT i.id FROM interactions i WHERE {where} "
                                      "ORDER BY i.id DESC LIMIT ?", [*params, 51]).fetchall()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="a postgresql:// URL")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    con, fresh, _ = open_bench_store(args.db, Path("."))
    world = seed(con, args.rows, rng) if fresh else _reload(con, args.rows, rng)
    if fresh:
        seed_reviews(con, world, rng)
        con.execute("VACUUM ANALYZE")
    first, last = con.execute("SELECT min(created_at), max(created_at) FROM interactions"
                              ).fetchall()[0]
    count = con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]
    day = timedelta(days=1)

    def midnight(moment: datetime) -> datetime:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    F = InteractionFilter
    ranges: list[tuple[str, F]] = [
        ("newest day", F(since=midnight(last), until=midnight(last) + day)),
        ("middle day", F(since=midnight(first + (last - first) / 2),
                         until=midnight(first + (last - first) / 2) + day)),
        ("oldest day", F(since=midnight(first) + day, until=midnight(first) + 2 * day)),
        ("oldest day, model", F(since=midnight(first) + day, until=midnight(first) + 2 * day,
                                model="support-bot")),
        ("a week, a month back", F(since=midnight(last) - 37 * day,
                                   until=midnight(last) - 30 * day)),
        ("since 30 days back (open)", F(since=midnight(last) - 30 * day)),
    ]
    print(f"Postgres: {count:,} interactions over {(last - first).days} days; warm p50 of "
          f"{args.runs} runs after one warm-up (ms)\n")

    def run(fn: Callable[[], Any]) -> float:
        return timed(fn, args.runs)[0]

    after: dict[str, tuple[int, list[float]]] = {}
    for label, flt in ranges:
        query = ReviewQuery(base=flt)
        where, params = flt.where("i")
        in_range = con.execute(f"SELECT count(*) FROM interactions i WHERE {where}",
                               params).fetchall()[0][0]
        pending = ReviewQuery(review="pending", base=flt)
        after[label] = (in_range, [
            run(lambda: find_ids(con, query, limit=50)),  # noqa: B023
            run(lambda: list_review_items(con, query, limit=50)),  # noqa: B023
            run(lambda: find_ids(con, pending, limit=50))])  # noqa: B023
    # before: the statement the list issued, with the time index migration 50 replaced
    # (rolled back: Postgres DDL is transactional)
    con.execute("BEGIN")
    con.execute("CREATE INDEX interactions_by_time ON interactions (created_at)")
    con.execute("DROP INDEX interactions_by_time_id")
    before = {}
    for label, flt in ranges:
        query = ReviewQuery(base=flt)
        assert old_walk(con, query)[:50] == find_ids(con, query, limit=50)[0], label
        before[label] = run(lambda: old_walk(con, query))  # noqa: B023
    con.execute("ROLLBACK")
    print(f"{'since/until list, first page':<30} {'rows':>7} {'before':>9} {'after':>8} "
          f"{'before/after':>12} {'page (after)':>13} {'pending (after)':>16}")
    for label, _ in ranges:
        in_range, (ids, page, pending_ms) = after[label]
        print(f"{label:<30} {in_range:>7,} {before[label]:9.1f} {ids:8.1f} "
              f"{before[label] / ids:12.1f} {page:13.1f} {pending_ms:16.1f}")
    con.close()


if __name__ == "__main__":
    main()
