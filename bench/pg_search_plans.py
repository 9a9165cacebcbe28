"""Postgres search plans on the shapes review r12z found slow, timed with this tree and a
baseline tree on the same database in the same run.

    PYTHONPATH=$PWD python bench/pg_search_plans.py --db postgresql://... [--rows 100000]
        [--baseline-tree /path/to/a/worktree]

Seeds an empty database (a seeded one is reused): every row says `hello` and two random words;
the oldest 60% say `ancient` and end their answer with one of 990 words `fill000`.. (`fill*`
is a prefix of 990 words, under the 1,000-word cap, Postgres's too since the hybrid search;
`fill01*` is 10 words): common, but absent from the newest 40%;
one row in 997 says `zebra`. Then VACUUM ANALYZE, and the first page (50 ids) of each query is timed
(median of --runs; the best of --rounds rounds alternating the trees), with each tree's code
in a process of its own. A query answered with an error is marked with its status (400).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORDS = ["refund", "invoice", "parcel", "shipping", "password", "billing", "delivery",
         "order", "account", "printer", "router", "screen", "battery", "license"]
QUERIES = [("fill*", "conversation"), ("fill* hello", "conversation"),
           ("fill* refund invoice", "conversation"), ("fill01*", "conversation"),
           ("fill01* hello", "conversation"), ("fill01* refund invoice", "conversation"),
           ("ancient", "conversation"), ("zebra", "conversation"), ("hello", "conversation"),
           ("refund parcel", "all")]


def seed(url: str, rows: int) -> None:
    from storage.records import insert_interactions, to_arrow
    from storage.search_index import index_batch
    from storage.search_vectors import build_vectors
    from tests.test_search_languages import item, opened

    with opened(url) as con:
        if con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]:
            return
        pick = random.Random(7)
        started = time.perf_counter()
        for start in range(0, rows, 5000):
            batch = []
            for k in range(start, min(rows, start + 5000)):
                user = "hello " + " ".join(pick.sample(WORDS, 2)) \
                    + (" zebra" if k % 997 == 0 else "")
                old = k < rows * 0.6  # the newest 40% say neither ancient nor fill...
                user += " ancient" if old else ""
                batch.append(item(k, user, f"sure, fill{k % 990:03d}" if old else "sure"))
            table = to_arrow(batch)
            con.execute("BEGIN")
            insert_interactions(con, table)
            index_batch(con, table)
            con.execute("COMMIT")
        build_vectors(con)  # the GIN, as the indexer builds it (storage.search_vectors)
        con.execute("VACUUM ANALYZE")
        print(f"seeded {rows} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def timings(url: str, runs: int) -> dict[str, float]:
    from storage.queue import ReviewQuery, find_ids
    from tests.test_search_languages import opened
    from tuneloop.errors import TuneloopError

    out, failed = {}, {}
    with opened(url) as con:
        for q, q_in in QUERIES:
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                try:
                    find_ids(con, ReviewQuery(q=q, q_in=q_in), limit=50)
                except TuneloopError as exc:
                    failed[f"{q} ({q_in})"] = exc.status_code
                times.append((time.perf_counter() - started) * 1000)
            out[f"{q} ({q_in})"] = statistics.median(times)
    return {"ms": out, "failed": failed}


def time_only_run(script: Path, tree: Path, db: str, runs: int) -> dict[str, Any]:
    """One `script --time-only` run with `tree`'s code (a subprocess of its own, so two trees
    are timed alternately in one bench run): the JSON it printed last."""
    done = subprocess.run(
        [sys.executable, str(script.resolve()), "--db", db, "--runs", str(runs), "--time-only"],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin"}, cwd=tree, capture_output=True,
        text=True, check=True)
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def shown(results: dict[str, dict[str, float]], failed: dict[str, dict[str, int]], label: str,
          query: str) -> str:
    status = failed.get(label, {}).get(query)
    return f"{results[label][query]:9.1f}" + (f" ({status})" if status else "      ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-tree", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--time-only", action="store_true")
    args = parser.parse_args()
    if args.time_only:
        print(json.dumps(timings(args.db, args.runs)))
        return
    seed(args.db, args.rows)
    here = Path(__file__).resolve().parent.parent
    trees = [("this tree", here)] + ([("baseline", Path(args.baseline_tree))]
                                     if args.baseline_tree else [])
    results: dict[str, dict[str, float]] = {}
    failed: dict[str, dict[str, int]] = {}
    for _ in range(args.rounds):  # alternating, each query's best round kept (load moves)
        for label, tree in trees:
            answer = time_only_run(Path(__file__), tree, args.db, args.runs)
            got = answer["ms"]
            failed.setdefault(label, {}).update(answer["failed"])
            best = results.setdefault(label, got)
            for query, ms in got.items():
                best[query] = min(best[query], ms)
    print(f"first page of 50 (ms: median of {args.runs}, the best of {args.rounds} alternating "
          f"rounds), {args.rows} rows: this tree, baseline, ratio")
    for query in results["this tree"]:
        line = f"{query:40} {shown(results, failed, 'this tree', query)}"
        if "baseline" in results:
            base = results["baseline"][query]
            ratio = results["this tree"][query] / base
            line += f" {shown(results, failed, 'baseline', query)}  ratio {ratio:.3f}"
        print(line)


if __name__ == "__main__":
    main()
