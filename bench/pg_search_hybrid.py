"""Postgres search on the six shapes of issue 12, timed with this tree and a baseline tree on
the same database in the same run (the baseline: main, the postings walk alone).

    PYTHONPATH=$PWD python bench/pg_search_hybrid.py --db postgresql://... \
        --baseline-tree /path/to/a/worktree [--rows 200000]

Seeds an empty database (a seeded one is reused): bench/review_queries.py's `--rows` rows
(a Zipf vocabulary: `aadayjs` in about half of them), then 100,000 OLDER rows, half saying
`oldword`, 60% `alpha beta gamma` together, each `filler<k % 997> tok<k % 13>` and an answer
`ans<k % 101> plain`, then 3,000 NEWER rows saying `newword`; the GIN built as the indexer
builds it (storage.search_vectors), VACUUM ANALYZE. Then the first page (50 ids, no time
budget: the cost itself) of each query is timed (median of --runs; the best of --rounds rounds
alternating the trees), each tree's code in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

COMMON = "aadayjs"
QUERIES = [COMMON, "oldword", "alpha beta", "alpha tok3 filler5", f"oldword {COMMON}",
           f"{COMMON} alpha beta gamma oldword plain tok1 ans1"]
OLD_ROWS, NEW_ROWS, DAY_MS = 100_000, 3000, 86_400_000
BASE_MS = 1_750_000_000_000  # bench/review_queries.py's rows are after it


def crafted(con: Any, start_ms: int, users: list[str], answers: list[str], tag: int) -> None:
    import orjson

    from bench.review_queries import SYSTEM
    from storage.records import insert_interactions, to_arrow
    from storage.search_index import forward_index, store_forward_index

    rows = []
    for k, (user, answer) in enumerate(zip(users, answers, strict=True)):
        m = start_ms + 1000 * k
        rows.append({
            "id": f"{m >> 16:08x}-{m & 0xFFFF:04x}-7000-8{tag:03x}-{k:012x}",
            "created_at": m * 1000, "endpoint": "chat.completions", "model": "m",
            "traffic": "production", "status_code": 200, "tags": [],
            "request": orjson.dumps({"model": "m", "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": user}]}).decode(),
            "response": orjson.dumps({"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer},
                 "finish_reason": "stop"}]}).decode()})
    con.execute("BEGIN")
    insert_interactions(con, to_arrow(rows))
    store_forward_index(con, forward_index([r["id"] for r in rows],
                                           [(SYSTEM, u, a) for u, a in zip(users, answers,
                                                                          strict=True)]))
    con.execute("COMMIT")


def seed(url: str, rows: int) -> None:
    import numpy as np

    from bench.review_queries import seed as seed_bench
    from storage.search_vectors import build_vectors
    from tests.test_search_languages import opened

    with opened(url) as con:
        if con.execute("SELECT count(*) FROM interactions").fetchall()[0][0]:
            return
        started = time.perf_counter()
        seed_bench(con, rows, np.random.default_rng(42))
        users = [("oldword " if k % 2 == 0 else "") + ("alpha beta gamma " if k % 5 < 3 else "")
                 + f"filler{k % 997} tok{k % 13}" for k in range(OLD_ROWS)]
        answers = [f"ans{k % 101} plain" for k in range(OLD_ROWS)]
        for s in range(0, OLD_ROWS, 25_000):
            crafted(con, BASE_MS - 10 * DAY_MS + 1000 * s, users[s:s + 25_000],
                    answers[s:s + 25_000], 1)
        crafted(con, BASE_MS + 91 * DAY_MS, [f"newword fresh{k % 7}" for k in range(NEW_ROWS)],
                ["new answer"] * NEW_ROWS, 2)
        build_vectors(con)
        con.execute("VACUUM ANALYZE")
        print(f"seeded in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def timings(url: str, runs: int) -> dict[str, Any]:
    from storage.queue import ReviewQuery, find_ids
    from tests.test_search_languages import opened

    out, found = {}, {}
    with opened(url) as con:
        find_ids(con, ReviewQuery(q="warm"), limit=50)  # the connection's first statements
        for q in QUERIES:
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                page, _ = find_ids(con, ReviewQuery(q=q), limit=50)
                times.append((time.perf_counter() - started) * 1000)
            out[q], found[q] = statistics.median(times), len(page)
    return {"ms": out, "found": found}


def main() -> None:
    from bench.pg_search_plans import time_only_run

    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-tree", default=None, help="required but with --time-only")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--time-only", action="store_true")
    args = parser.parse_args()
    if args.time_only:
        print(json.dumps(timings(args.db, args.runs)))
        return
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required")
    seed(args.db, args.rows)
    here = Path(__file__).resolve().parent.parent
    trees = [("this tree", here), ("baseline", Path(args.baseline_tree))]
    best: dict[str, dict[str, float]] = {}
    found: dict[str, dict[str, int]] = {}
    for _ in range(args.rounds):  # alternating, each query's best round kept (load moves)
        for label, tree in trees:
            answer = time_only_run(Path(__file__), tree, args.db, args.runs)
            found[label] = answer["found"]
            kept = best.setdefault(label, answer["ms"])
            for query, ms in answer["ms"].items():
                kept[query] = min(kept[query], ms)
    print(f"first page of 50 (ms: median of {args.runs}, the best of {args.rounds} alternating "
          "rounds; ids found): this tree, baseline, ratio")
    for query in QUERIES:
        mine, base = best["this tree"][query], best["baseline"][query]
        print(f"{query:52} {mine:8.1f} ({found['this tree'][query]:2})"
              f" {base:8.1f} ({found['baseline'][query]:2})  ratio {mine / base:.3f}")


if __name__ == "__main__":
    main()
