"""Search over an unindexed tail of big rows (review r12x3 HIGH 1): the time and the memory of
one search in this process, and the bytes of the tail it read, with BIG rows of MB megabytes
each listed for the indexer (the newest) over SMALL ordinary ones (older), none indexed yet.

    PYTHONPATH=<tree> python bench/search_tail.py [--big 20] [--mb 8] [--small 200] [--pg]

Run it with PYTHONPATH on main and on this tree, side by side. `--pg`: a throwaway Postgres
cluster (tests/pg_cluster.py, taken from this file's tree); else a DuckDB file. It prints, for
a search of a word of one small row: its time, the peak RSS of this process during it (sampled
every 10 ms) over the RSS before, and whether the row was found; then (this tree) the time of
the first read alone, the sizes of the newest 500 unindexed rows (storage.search_tail).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.pg_cluster; PYTHONPATH first

from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.search_index import queue_for_index
from storage.store import migrate_store, open_store


def rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


def row(k: int, answer: str) -> dict[str, Any]:
    return {"id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
            "created_at": 1_700_000_000_000_000 + k, "endpoint": "chat.completions",
            "model": "m", "traffic": "production", "status_code": 200, "tags": [],
            "request": orjson.dumps({"messages": [
                {"role": "user", "content": f"hello smallword{k}"}]}).decode(),
            "response": orjson.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": answer}}]}).decode()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=20)
    parser.add_argument("--mb", type=float, default=8.0)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--pg", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--random", action="store_true",
                        help="big rows of random hex (incompressible) instead of one letter")
    args = parser.parse_args()
    cluster = None
    if args.pg:
        from tests.pg_cluster import PgCluster
        cluster = PgCluster.start()
        spec: str = cluster.create_database()
    else:
        spec = str(Path(tempfile.mkdtemp(prefix="search_tail_")) / "t.duckdb")
    db = open_store(spec)
    try:
        migrate_store(db)
        db.write_sync(lambda con: insert_interactions(
            con, to_arrow([row(k, "fine") for k in range(args.small)]), then=queue_for_index))
        filler = os.urandom(int(args.mb * 500_000)).hex() if args.random \
            else "x" * int(args.mb * 1_000_000)
        for k in range(args.big):  # one a transaction: the newest rows
            db.write_sync(lambda con, k=k: insert_interactions(
                con, to_arrow([row(args.small + k, filler)]), then=queue_for_index))
        target = f"smallword{args.small - 1}"
        for run in range(args.runs):
            base = rss_mb()
            peak = [base]
            stop = threading.Event()

            def watch(peak: list[int] = peak, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb())
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch)
            watcher.start()
            started = time.monotonic()
            try:
                found = db.read_sync(lambda con: find_ids(con, ReviewQuery(q=target),
                                                          limit=20)[0])
            finally:
                stop.set()
                watcher.join()
            print(f"run {run + 1}: {time.monotonic() - started:.2f} s, RSS {base} -> peak "
                  f"{peak[0]} MB, found {len(found) == 1}", flush=True)
        try:  # this tree's first read: the sizes of the newest unindexed rows, alone
            from storage.search_tail import pending_sizes
        except ImportError:
            return
        for _ in range(args.runs):
            started = time.monotonic()
            sizes = db.read_sync(lambda con: pending_sizes(con, 500, newest=True))
            print(f"sizes of the newest {len(sizes)} unindexed rows "
                  f"({sum(n for _, n in sizes) / 1e6:.0f} MB): "
                  f"{(time.monotonic() - started) * 1000:.0f} ms", flush=True)
    finally:
        db.close()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
