"""`tuneloop migrate-store` throughput: seed N synthetic interactions into a DuckDB file (the
seeding of bench/review_queries.py: interactions, the term index, reviews), copy it into a
Postgres database, then back into a new DuckDB file, and print rows/s per table and overall
(the command's own summary) with the time of each phase.

    PYTHONPATH=$PWD python bench/migrate_store.py [--rows N] [--to postgresql://...]
        [--baseline REV [--rounds R]]

Without --to, a throwaway Postgres cluster is started (tests/pg_cluster.py: Debian's
postgresql package; run as the `postgres` user when we are root) and deleted afterwards.
With --baseline, the copy DuckDB → Postgres (with its verification) is then run R more times
by this tree and by commit REV (`git archive`), alternating, each in a process of its own into
a fresh database: wall seconds and the command's own CPU seconds (the figure a shared
machine's load moves least), each tree's median and baseline/this.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from click.testing import CliRunner

from bench.review_queries import seed, seed_reviews
from storage.db import connect
from storage.migrations import migrate
from tests.pg_cluster import PgCluster
from tuneloop.cli import main as cli


def copy(source: str, dest: str, batch_rows: int) -> float:
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["migrate-store", "--from", source, "--to", dest,
                                      "--batch-rows", str(batch_rows)])
    print(result.output)
    if result.exit_code != 0:
        raise SystemExit(f"migrate-store failed ({result.exit_code})")
    return time.perf_counter() - started


ROOT = Path(__file__).resolve().parent.parent


def timed_copy(root: Path, source: str, dest: str, batch_rows: int) -> tuple[float, float]:
    """`migrate-store` of the tree at `root` in a process of its own: wall and CPU seconds."""
    env = dict(os.environ, PYTHONPATH=str(root))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tuneloop.cli", "migrate-store", "--from",
                          source, "--to", dest, "--batch-rows", str(batch_rows), "-q"],
                         cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"migrate-store in {root} failed:\n{out.stdout[-2000:]}"
                         f"{out.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(source: str, cluster: PgCluster, rev: str, rounds: int, batch_rows: int,
            tmp: Path) -> None:
    old = tmp / "baseline"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    figures: dict[str, list[tuple[float, float]]] = {"this": [], "baseline": []}
    for _ in range(rounds):
        for name, root in (("this", ROOT), ("baseline", old)):
            figures[name].append(timed_copy(root, source, cluster.create_database(),
                                            batch_rows))
    print(f"\nDuckDB → Postgres with verification, this tree vs {rev}, {rounds} rounds "
          "(median; each round's wall/CPU s this tree, then baseline):")
    print("  " + "  ".join(f"{a[0]:.1f}/{a[1]:.1f} {b[0]:.1f}/{b[1]:.1f}"
                           for a, b in zip(figures["this"], figures["baseline"], strict=True)))
    for column, what in ((0, "wall s"), (1, "CPU s ")):
        this = statistics.median(f[column] for f in figures["this"])
        base = statistics.median(f[column] for f in figures["baseline"])
        print(f"  {what}  this tree {this:6.1f}  baseline {base:6.1f}  "
              f"baseline/this {base / this:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--to", default=None, help="an empty Postgres database's URL")
    parser.add_argument("--baseline", default="", help="a commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.TemporaryDirectory(prefix="tuneloop-bench-")
    path = Path(workdir.name) / "source.duckdb"
    con = connect(path)
    migrate(con)
    rng = np.random.default_rng(42)
    world = seed(con, args.rows, rng)
    seed_reviews(con, world, rng)
    con.execute("CHECKPOINT")
    counts = con.execute("SELECT (SELECT count(*) FROM interactions), "
                         "(SELECT count(*) FROM search_terms), (SELECT count(*) FROM reviews)"
                         ).fetchall()[0]
    con.close()
    print(f"{counts[0]:,} interactions, {counts[1]:,} term-index rows, {counts[2]:,} reviewed; "
          f"file {path.stat().st_size / 1e6:.0f} MB\n")
    cluster = None if args.to else PgCluster.start()
    try:
        url = args.to or (cluster.create_database() if cluster else "")
        to_pg = copy(str(path), url, args.batch_rows)
        back = copy(url, str(Path(workdir.name) / "back.duckdb"), args.batch_rows)
        print(f"DuckDB → Postgres: {to_pg:.1f} s in all (copy + verification); "
              f"Postgres → DuckDB: {back:.1f} s")
        if args.baseline and cluster:
            compare(str(path), cluster, args.baseline, args.rounds, args.batch_rows,
                    Path(workdir.name))
    finally:
        if cluster:
            cluster.stop()
        workdir.cleanup()


if __name__ == "__main__":
    main()
