"""`tuneloop migrate-store` throughput: seed N synthetic interactions into a DuckDB file (the
seeding of bench/review_queries.py: interactions, the term index, reviews), copy it into a
Postgres database, then back into a new DuckDB file, and print rows/s per table and overall
(the command's own summary) with the time of each phase.

    PYTHONPATH=$PWD python bench/migrate_store.py [--rows N] [--to postgresql://...]

Without --to, a throwaway Postgres cluster is started (tests/pg_cluster.py: Debian's
postgresql package; run as the `postgres` user when we are root) and deleted afterwards.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--to", default=None, help="an empty Postgres database's URL")
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
    finally:
        if cluster:
            cluster.stop()
        workdir.cleanup()


if __name__ == "__main__":
    main()
