"""Search over an unindexed tail of big rows (reviews r12x3 HIGH 1, r12x4 HIGH): the time and
the memory of one search in this process, and the bytes of the tail it read, with BIG rows of
MB megabytes each (repetitive text: compressible) listed for the indexer (the newest) over
SMALL ordinary ones (older), none indexed yet.

    PYTHONPATH=<tree> python bench/search_tail.py [--big 20] [--mb 8] [--small 200] [--pg]
        [--baseline main]

`--pg`: a throwaway Postgres cluster (tests/pg_cluster.py, taken from this file's tree); else a
DuckDB file. It prints, for a search of a word of one small row: its time, the peak RSS of this
process during it (sampled every 10 ms) over the RSS before, and whether the row was found;
then (this tree) the time of the first read alone, the sizes of the newest 500 unindexed rows
(storage.search_tail). `--baseline REF`: then the same search on the same store by the code of
git REF (exported to a temporary directory, run in a child process), and the ratio of the
median times. r12x4's case, the sizes counted from the values on Postgres (each detoasted):
`--pg --big 30 --mb 24 --baseline <a commit before migration 53>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.pg_cluster; PYTHONPATH first

from bench.rss import PeakRss
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.search_index import queue_for_index
from storage.store import migrate_store, open_store

ROOT = Path(__file__).resolve().parents[1]
# the search of the baseline tree, in a child process whose PYTHONPATH is that tree
BASELINE = """
import json, sys, time
import storage
print(json.dumps(storage.__file__), flush=True)
from storage.queue import ReviewQuery, find_ids
from storage.store import open_store
spec, target, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = open_store(spec)
try:
    for _ in range(runs):
        started = time.monotonic()
        found = db.read_sync(lambda con: find_ids(con, ReviewQuery(q=target), limit=20)[0])
        print(json.dumps([time.monotonic() - started, len(found) == 1]), flush=True)
finally:
    db.close()
"""


def baseline_times(ref: str, spec: str, target: str, runs: int) -> list[float]:
    """The search's times by the code of git `ref`, on the same store."""
    with tempfile.TemporaryDirectory(prefix="search_tail_base_") as tree:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        env = dict(os.environ, PYTHONPATH=tree, LITELLM_LOCAL_MODEL_COST_MAP="True")
        out = subprocess.run([sys.executable, "-c", BASELINE, spec, target, str(runs)],
                             env=env, cwd=tree, check=True, capture_output=True, text=True,
                             timeout=600).stdout
    lines = out.splitlines()
    if not json.loads(lines[0]).startswith(tree):
        raise SystemExit(f"the baseline ran other code: {lines[0]}")
    times = []
    for run, line in enumerate(lines[1:]):
        spent, found = json.loads(line)
        print(f"{ref} run {run + 1}: {spent:.2f} s, found {found}", flush=True)
        times.append(float(spent))
    return times



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
                        help="big rows of random hex (incompressible) instead of repeated text")
    parser.add_argument("--baseline", metavar="REF",
                        help="also the same search by the code of this git ref (a child "
                             "process, same store), and the ratio")
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
        size = int(args.mb * 1_000_000)
        filler = os.urandom(size // 2).hex() if args.random else \
            ("the same answer again, step by step; " * (size // 37 + 1))[:size]
        for k in range(args.big):  # one a transaction: the newest rows
            db.write_sync(lambda con, k=k: insert_interactions(
                con, to_arrow([row(args.small + k, filler)]), then=queue_for_index))
        target = f"smallword{args.small - 1}"
        times: list[float] = []
        for run in range(args.runs):
            started = time.monotonic()
            with PeakRss() as rss:
                found = db.read_sync(lambda con: find_ids(con, ReviewQuery(q=target),
                                                          limit=20)[0])
            times.append(time.monotonic() - started)
            print(f"run {run + 1}: {times[-1]:.2f} s, RSS {rss.base} -> peak "
                  f"{rss.peak} MB, found {len(found) == 1}", flush=True)
        try:  # this tree's first read: the sizes of the newest unindexed rows, alone
            from storage.search_tail import DEFAULT_TAIL, tail_sizes
        except ImportError:
            tail_sizes = None  # type: ignore[assignment]
        for _ in range(args.runs if tail_sizes is not None else 0):
            started = time.monotonic()
            sizes = db.read_sync(lambda con: tail_sizes(con, DEFAULT_TAIL))
            print(f"sizes of the tail's {len(sizes)} candidate rows "
                  f"({sum(n for _, n, _ in sizes) / 1e6:.0f} MB): "
                  f"{(time.monotonic() - started) * 1000:.0f} ms", flush=True)
        db.close()  # a DuckDB file is opened by one process at a time
        if args.baseline:
            base_times = baseline_times(args.baseline, spec, target, args.runs)
            print(f"one search, median: {args.baseline} {statistics.median(base_times):.3f} s, "
                  f"this tree {statistics.median(times):.3f} s: "
                  f"{statistics.median(base_times) / statistics.median(times):.1f}x",
                  flush=True)
    finally:
        db.close()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
