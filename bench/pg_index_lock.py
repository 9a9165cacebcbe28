"""How long a review's approve waits behind the search indexer on Postgres (review r12y MED 3).

A backlog of interactions at the index's caps (3 fields x MAX_FIELD_TERMS terms each) is
indexed by the background indexer while a reviewer approves an item every `--every-ms`
(each approve a write: it takes the deployment's write lock). Twice on the same database:

- `before`: main's behaviour (`merge_gin=False, write_budget_s=None`): the indexer leaves
  the GIN's pending list to the writes that fill it (the write that makes it outgrow 4 MB
  merges all of it, holding the lock), and sizes its writes by WRITE_TERMS rows alone,
- `after`: it merges the list after each of its writes, outside the lock, and sizes each
  write to hold the lock about WRITE_BUDGET_S (by the rows a second of the writes before).

The GIN is first given `--preload` interactions of `--keys` lexemes each (merged), so that a
merge costs what it does in a store that is not new. Prints approve latency p50/p95/max per
mode and the ratio before/after. Run from the repository root (< 60 s):

    python bench/pg_index_lock.py --rows 30 --preload 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.review import ReviewAction, apply_reviews  # noqa: E402
from storage.search_forward import MAX_FIELD_TERMS  # noqa: E402
from storage.search_index import SearchIndexer  # noqa: E402
from storage.search_queue import WRITE_BUDGET_S, BackgroundIndexer  # noqa: E402
from storage.store import Store, migrate_store, open_store  # noqa: E402
from tests.test_search_languages import item  # noqa: E402
from tests.test_search_queue import ingest  # noqa: E402
from tests.test_search_wide import words  # noqa: E402

FIELD_WORDS = MAX_FIELD_TERMS + 100


def wide(k: int) -> dict[str, Any]:
    system, user, answer = (" ".join(words(FIELD_WORDS, 6, skip=(3 * k + f) * FIELD_WORDS))
                            for f in range(3))
    return item(k, user, answer, system=system)


def preload(db: Store, docs: int, keys: int) -> None:
    """`docs` search_docs rows of `keys` random term keys each, then the GIN's list merged."""
    def run(con: Any) -> None:
        con.execute(
            "INSERT INTO search_docs (interaction_id, term_keys, term_fields) "
            "SELECT 'pre-' || lpad(n::text, 8, '0'), "
            "ARRAY(SELECT (random() * 400000)::bigint + n * 0 FROM generate_series(1, ?)), "
            "ARRAY(SELECT 2::smallint FROM generate_series(1, ?)) "
            "FROM generate_series(1, ?) AS n", [keys, keys, docs])
    db.write_sync(run)
    db.read_sync(lambda con: con.execute("VACUUM search_docs"))


def approving(db: Store, ids: list[str], every_s: float, stop: threading.Event,
              latencies: list[float]) -> None:
    n = 0
    while not stop.is_set():
        action = ReviewAction(ids[n % len(ids)], "approve", "bench")
        started = time.perf_counter()
        db.write_sync(lambda con, a=action: apply_reviews(con, [a]))
        latencies.append(time.perf_counter() - started)
        n += 1
        time.sleep(every_s)


def run(db: Store, first: int, rows: int, merge: bool, every_s: float,
        reviewed: list[str]) -> tuple[list[float], float]:
    ingest(db, [wide(k) for k in range(first, first + rows)])
    latencies: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=approving, args=(db, reviewed, every_s, stop, latencies))
    started = time.perf_counter()
    thread.start()
    try:
        indexer = BackgroundIndexer(db, SearchIndexer(None), merge_gin=merge,
                                    write_budget_s=WRITE_BUDGET_S if merge else None)
        assert asyncio.run(indexer.index_pending()) == rows
    finally:
        stop.set()
        thread.join()
    took = time.perf_counter() - started
    db.read_sync(lambda con: con.execute("VACUUM search_docs"))  # the next mode starts merged
    return latencies, took


def figures(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000,
            ordered[-1] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30, help="interactions at the caps")
    parser.add_argument("--preload", type=int, default=20000, help="docs in the GIN first")
    parser.add_argument("--keys", type=int, default=300, help="lexemes of a preloaded doc")
    parser.add_argument("--every-ms", type=float, default=20.0, help="between approves")
    parser.add_argument("--url", help="an empty Postgres database instead of a throwaway one")
    args = parser.parse_args()
    cluster = None
    url = args.url
    if url is None:
        from tests.pg_cluster import PgCluster
        cluster = PgCluster.start()
        url = cluster.create_database()
    db = open_store(url)
    try:
        migrate_store(db)
        started = time.perf_counter()
        preload(db, args.preload, args.keys)
        print(f"preloaded in {time.perf_counter() - started:.1f} s", flush=True)
        reviewed = [item(10_000 + k, f"hello {k}", "fine") for k in range(50)]
        ingest(db, reviewed)
        asyncio.run(BackgroundIndexer(db, SearchIndexer(None)).index_pending())
        ids = [r["id"] for r in reviewed]
        results = {}
        for n, (name, merge) in enumerate((("before", False), ("after", True))):
            results[name] = run(db, n * args.rows, args.rows, merge, args.every_ms / 1000, ids)
        print(f"{args.rows} interactions at the caps indexed over a GIN of {args.preload} docs "
              f"x {args.keys} lexemes; an approve every {args.every_ms:g} ms")
        print(f"{'mode':8} {'approves':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
              f"{'indexing s':>10}")
        for name, (latencies, took) in results.items():
            p50, p95, top = figures(latencies)
            print(f"{name:8} {len(latencies):8d} {p50:8.1f} {p95:8.1f} {top:8.1f} {took:10.1f}")
        before, after = (figures(results[m][0]) for m in ("before", "after"))
        print("ratio before/after: " + ", ".join(
            f"{label} {b / a:.1f}x" for label, b, a in zip(("p50", "p95", "max"), before, after,
                                                        strict=True)))
    finally:
        db.close()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
