"""GET /admin/stats at scale: `review_stats` as it is now (Postgres: one pass over its index)
against the six scans it ran before (issue 12), same run, same data, answers compared.

    PYTHONPATH=$PWD python bench/review_stats.py --db postgresql://...|PATH [--runs R]

The store must be seeded already (bench/review_queries.py seeds 1M rows into an empty
database or a new DuckDB file). Times are warm p50/p99 over the whole range, the newest
7 days and one day in the middle; the load average is printed with them. On Postgres (a
server on this machine) the median CPU the whole server spent per call is printed too: the
figure a shared machine's load moves least, about the time on an idle core (parallel
workers included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.replicas import postgres_cpu, postmaster_of
from bench.review_queries import open_bench_store, timed
from storage.backend import is_postgres
from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.stats import (
    _DAY_US,
    _REVIEWABLE,
    REVIEWED,
    _by_state,
    _by_tag,
    _day,
    _feedback,
    _range,
    _reviewers,
    review_stats,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="a seeded postgresql:// URL or DuckDB file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-old", action="store_true", help="time the one pass alone")
    args = parser.parse_args()
    con, fresh, backend = open_bench_store(args.db, Path("."))
    if fresh:
        sys.exit("seed the store first: bench/review_queries.py --db ...")
    count, last = con.execute("SELECT count(*), max(created_at) FROM interactions"
                              ).fetchall()[0]
    first = con.execute("SELECT min(created_at) FROM interactions").fetchall()[0][0]
    middle = (first + (last - first) / 2).replace(hour=0, minute=0, second=0, microsecond=0)
    ranges: list[tuple[str, datetime | None, datetime | None]] = [
        ("all", None, None), ("newest 7 days", last - timedelta(days=7), None),
        ("one day (middle)", middle, middle + timedelta(days=1))]
    server = postmaster_of(args.db) if is_postgres(con) else None

    def cpu(fn: Callable[[], Any]) -> str:
        if server is None:
            return ""
        spent = []
        for _ in range(args.runs):
            before = postgres_cpu(server)
            fn()
            spent.append(postgres_cpu(server) - before)
        return f" (server CPU {statistics.median(spent) * 1000:7.0f})"

    print(f"{backend}: {count:,} interactions; p50 / p99 ms over {args.runs} warm runs")
    for label, since, until in ranges:
        new_fn = partial(review_stats, con, since, until)
        new = timed(new_fn, args.runs)
        line = f"  {label:<18} now {new[0]:8.1f} / {new[1]:8.1f}{cpu(new_fn)}"
        if not args.skip_old:
            assert review_stats(con, since, until) == six_scans(con, since, until), label
            old_fn = partial(six_scans, con, since, until)
            old = timed(old_fn, args.runs)
            line += (f"   six scans (before) {old[0]:8.1f} / {old[1]:8.1f}{cpu(old_fn)}   "
                     f"x{old[0] / new[0]:.1f}")
        print(f"{line}   load {os.getloadavg()[0]:.1f}", flush=True)
    con.close()


# -- review_stats as it was before the one-pass query (the reference of
#    tests/test_stats_one_pass.py) ---------------------------------------------------------


def six_scans(con: Connection, since: datetime | None = None,
              until: datetime | None = None) -> dict[str, Any]:
    d = dialect_of(con)
    i_where, i_params = _range("created_at", since, until)
    reviewable = f"{i_where} AND endpoint IN ({_REVIEWABLE})"
    r_where, r_params = _range("interaction_created_at", since, until)

    def grouped(i_key: str, r_key: str) -> tuple[dict[Any, int], list[tuple[Any, str, int]]]:
        totals = dict(con.execute(f"SELECT {i_key} AS k, count(*) FROM interactions "
                                  f"WHERE {reviewable} GROUP BY k", i_params).fetchall())
        reviewed = con.execute(f"SELECT {r_key} AS k, state, count(*) FROM reviews "
                               f"WHERE {r_where} GROUP BY k, state", r_params).fetchall()
        return totals, [(k, s, c) for k, s, c in reviewed]

    by_day = _by_state(*grouped(d.int_div(d.epoch_us("created_at"), str(_DAY_US)),
                                d.int_div(d.epoch_us("interaction_created_at"), str(_DAY_US))),
                       "day")
    for row in by_day:
        row["day"] = _day(row["day"])
    by_model = _by_state(*grouped("coalesce(model, '')", "coalesce(model, '')"), "model")
    overall = _by_state(*grouped("1", "1"), "all")
    totals = overall[0] if overall else {"pending": 0, **dict.fromkeys(REVIEWED, 0), "total": 0}
    totals.pop("all", None)
    not_reviewable = con.execute(
        f"SELECT count(*) FROM interactions WHERE {i_where} AND endpoint NOT IN ({_REVIEWABLE})",
        i_params).fetchall()[0][0]
    return {
        "totals": {**totals, "not_reviewable": not_reviewable},
        "by_day": sorted(by_day, key=lambda r: r["day"]),
        "by_model": sorted(by_model, key=lambda r: (-r["total"], r["model"])),
        "by_tag": _old_by_tag(con, reviewable, i_params, since, until),
        "token_histogram": _old_token_histogram(con, reviewable, i_params),
        "reviewers": _reviewers(con, since, until),
        "feedback": _feedback(con, since, until),
    }


def _old_by_tag(con: Connection, reviewable: str, i_params: list[Any],
                since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    """The logged tags counted by their own scan (the old shape); reviewers' tags as now."""
    d = dialect_of(con)
    logged: dict[str, int] = dict(con.execute(
        f"SELECT tag, count(*) FROM (SELECT unnest(tags) AS tag FROM interactions "
        f"WHERE {reviewable} AND {d.list_length('tags')} > 0) AS logged GROUP BY tag",
        i_params).fetchall())
    return _by_tag(con, logged, since, until)


def _old_token_histogram(con: Connection, reviewable: str,
                         i_params: list[Any]) -> list[dict[str, Any]]:
    log2 = dialect_of(con).log2("t")
    rows = con.execute(
        f"""
        SELECT CASE WHEN t < 64 THEN 0 ELSE CAST(pow(2, floor({log2})) AS BIGINT) END AS low,
               count(*)
        FROM (SELECT coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) AS t
              FROM interactions WHERE {reviewable}) AS tokens
        GROUP BY low ORDER BY low
        """, i_params).fetchall()
    return [{"low": low, "high": 64 if low == 0 else low * 2, "count": count}
            for low, count in rows]


if __name__ == "__main__":
    main()
