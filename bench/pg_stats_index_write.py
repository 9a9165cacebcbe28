"""What the stats page's indexes (migration 52) cost Postgres ingest: the same realistic rows
inserted as the writer inserts them (`insert_interactions`, one transaction per batch), into
a fresh database with every migration (`stats index`) and into one without those two indexes
(`main`: as before migration 52), in turn, several rounds, same cluster, same run.

    PYTHONPATH=$PWD python bench/pg_stats_index_write.py [--rows N] [--rounds R] [--durable]

Prints rows/s, the server's CPU per 1,000 rows (the figure a shared machine's load moves
least) and the bytes on disk per row of each round, then the medians and their ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pg_index_write import backend_cpu  # noqa: E402
from bench.pg_ingest import DURABLE, PRODUCTION_WAL, make_row, uuid7_at, warm_wal  # noqa: E402

LAYOUTS = {"main": ["DROP INDEX interactions_stats", "DROP INDEX interactions_stats_wide"],
           "stats index": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--durable", action="store_true",
                        help="fsync, synchronous_commit, full_page_writes on, with "
                             "bench/pg_ingest.py's PRODUCTION_WAL")
    args = parser.parse_args()
    import psycopg

    from storage.backend.pg_connection import PgConnection
    from storage.records import insert_interactions, to_arrow
    from storage.store import migrate_store, open_store
    from tests.pg_cluster import PgCluster

    rng, ids = random.Random(12), random.Random(7)
    rows = [dict(make_row(rng, n), id=uuid7_at(1_764_460_800_000 + n, ids))
            for n in range(args.rows)]
    batches = [to_arrow(rows[i:i + args.batch]) for i in range(0, len(rows), args.batch)]
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.rows:,} "
          f"rows in batches of {args.batch}, {'durable' if args.durable else 'not durable'}")
    cluster = PgCluster.start({**DURABLE, **PRODUCTION_WAL} if args.durable else None)
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in LAYOUTS}
    try:
        if args.durable:
            warm_wal(cluster.admin_url())
        print(f"{'round':<6}{'layout':<12} {'rows/s':>9} {'server CPU ms/1,000':>20} "
              f"{'bytes/row':>10}")
        for round_ in range(args.rounds):
            for name, ddl in LAYOUTS.items():
                url = cluster.create_database()
                db = open_store(url)
                migrate_store(db)
                db.close()
                with psycopg.connect(url, autocommit=True) as raw:
                    for statement in ddl:
                        raw.execute(statement.encode())
                    con = PgConnection(raw)
                    cpu, start = backend_cpu(raw), time.perf_counter()
                    for batch in batches:
                        with raw.transaction():
                            insert_interactions(con, batch)
                    elapsed, cpu = time.perf_counter() - start, backend_cpu(raw) - cpu
                    size = raw.execute("SELECT pg_total_relation_size('interactions')"
                                       ).fetchone()
                    assert size is not None
                figure = (args.rows / elapsed, cpu / args.rows * 1e6, size[0] / args.rows)
                figures[name].append(figure)
                print(f"{round_:<6}{name:<12} {figure[0]:>9,.0f} {figure[1]:>20.1f} "
                      f"{figure[2]:>10,.0f}", flush=True)
                cluster.drop_database(url)
    finally:
        cluster.stop()
    medians = {name: [statistics.median(f[k] for f in found) for k in range(3)]
               for name, found in figures.items()}
    main_, new = medians["main"], medians["stats index"]
    print(f"median ratio stats index / main: rows/s {new[0] / main_[0]:.3f}, server CPU "
          f"{new[1] / main_[1]:.3f}, bytes/row {new[2] / main_[2]:.3f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
