"""Ingest with the search indexer running: the writer and the indexer of a replica together.

`bench/pg_ingest.py` times the writer alone and the indexer alone; a replica runs both on the
same cores, the indexer's writes taking the same write lock as ingest. Here each tree (this
one and a baseline commit's, each in a process of its own: bench/pg_together_driver.py) runs
both as proxy/app.py wires them (compute worker process, the writer waking the indexer, the
server's batch of 5,000 rows and interval of 1 s) into a local Postgres, and the script
prints for each:

- `writer`: rows/s ingested (the spool drained into `interactions`),
- `indexer`: rows/s indexed meanwhile, the search backlog (`search_pending`) when the writer is
  done, its slope over the second half of the run (rows/s; > 0: the indexer falls behind at
  that rate), the indexer's rate once the writer is done (alone, until the backlog is gone
  or `--drain-s`) and how long after the writer's end the backlog was gone (`caught up`: with
  `--rate R`, how far the search index lags behind a burst of `--rows` at R rows/s; `-` when
  not within `--drain-s`),
- the CPU per 1,000 rows of the database's server processes and of the replica (its process
  and its worker): until the writer is done (`writing`), and until the backlog is gone (`all`:
  the writer's and the indexer's, the cost of a row ingested and indexed), and the
  checkpoints and WAL of the run,

with this tree's figures as a ratio to the baseline's. `--rate 0` (the default) spools rows as
fast as the writer takes them (two batches kept waiting: how fast the writer goes with the
indexer woken after each of its ingests, as in a steady state); `--rate R` spools R rows/s as
the proxy would (does each keep up with R: the backlog's slope).
`--prefill N` first puts N rows (interactions and their search index, built from the same
pool of rows) into the database, so the run goes into a big table with big indexes and meets
checkpoints; with it the baseline runs first and this tree after it on the same database (a
migration of this tree may change what the baseline's schema has), else each round each tree
gets a fresh database and which goes first alternates. Run from the repository root:

    python bench/pg_ingest_together.py --rows 60000 --durable
    python bench/pg_ingest_together.py --rows 100000 --rate 20000 --durable
    python bench/pg_ingest_together.py --rows 100000 --durable --prefill 1000000

The figures move with a shared machine's load: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pg_ingest import (  # noqa: E402
    DURABLE,
    PRODUCTION_WAL,
    baseline_tree,
    make_row,
    uuid7_at,
    wal_counters,
    warm_wal,
)

BASELINE = "6e6b5f1"  # main when the indexer's cost was measured (writer 17,500 rows/s with it)
POOL_ROWS = 10_000  # distinct rows, repeated with new ids
PREFILL_CHUNK = 10_000
DRIVER = Path(__file__).resolve().parent / "pg_together_driver.py"


def write_pool(path: Path, rows: int) -> list[dict[str, Any]]:
    rng = random.Random(12)
    pool = [make_row(rng, n) for n in range(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in pool))
    return pool


def run_tree(root: Path, url: str, pool: Path, args: argparse.Namespace, name: str,
             spool: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, str(DRIVER), url, str(pool), str(args.rows),
                          str(args.rate), str(args.batch), str(spool), name, str(args.drain_s)],
                         cwd=root, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"together bench in {root} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def migrate_with(root: Path, url: str) -> None:
    """The database migrated by the tree at `root` (the baseline's schema for a prefill)."""
    code = "import sys; from storage.store import open_store, migrate_store; " \
           "db = open_store(sys.argv[1]); migrate_store(db); db.close()"
    subprocess.run([sys.executable, "-c", code, url], cwd=root, check=True,
                   env=dict(os.environ, PYTHONPATH=str(root)))


def prefill(url: str, pool: list[dict[str, Any]], count: int) -> float:
    """`count` rows (the pool's, with older ids) and their search index put straight into the
    tables (this tree's COPY paths; the pool's forward index computed once), a checkpoint
    after. Answers the seconds it took."""
    import pyarrow as pa

    from storage.records import insert_interactions, to_arrow
    from storage.search_index import ForwardIndex, batch_forward_index, store_forward_index
    from storage.store import open_store

    start = time.perf_counter()
    placeholder = [dict(r, id=f"{n:08d}") for n, r in enumerate(pool)]
    forward = batch_forward_index(to_arrow(placeholder))
    position = [int(i) for i in forward.docs["interaction_id"].to_pylist()]
    word_position = [int(i) for i in forward.words["interaction_id"].to_pylist()]
    ids = random.Random("prefill")
    first_ms = 1_700_000_000_000  # before every run's ids
    db = open_store(url)
    try:
        done = 0
        while done < count:
            size = min(PREFILL_CHUNK, count - done, len(pool))
            new_ids = [uuid7_at(first_ms + done + k, ids) for k in range(size)]
            table = to_arrow([dict(r, id=i) for r, i in zip(pool, new_ids, strict=False)])
            docs = forward.docs.filter(pa.array([p < size for p in position]))
            docs = docs.set_column(0, "interaction_id", pa.array(
                [new_ids[p] for p in position if p < size], pa.string()))
            words = forward.words.slice(0, 0) if done else forward.words.filter(
                pa.array([p < size for p in word_position])).set_column(
                2, "interaction_id", pa.array([new_ids[p] for p in word_position if p < size],
                                              pa.string()))

            def write(con: Any, table: Any = table, docs: Any = docs, words: Any = words) -> None:
                con.execute("SET LOCAL synchronous_commit = off")
                insert_interactions(con, table)
                store_forward_index(con, ForwardIndex(docs, words))
            db.write_sync(write)
            done += size
            if done % 100_000 < size:
                print(f"  prefill {done:,} rows, {time.perf_counter() - start:.0f} s",
                      flush=True)
    finally:
        db.close()
    return time.perf_counter() - start


def _ratio(new: float | None, old: float | None) -> str:
    return f"{new / old:.2f}" if new and old else "-"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def report(results: dict[str, list[dict[str, Any]]], wal: dict[str, list[tuple[float, ...]]],
           baseline: str) -> None:
    fields = (("writer rows/s", "writer_rate", ",.0f", True),
              ("indexer rows/s meanwhile", "indexer_rate_during", ",.0f", True),
              ("backlog at writer's end", "backlog_end", ",.0f", False),
              ("backlog slope rows/s (2nd half)", "backlog_slope", ",.0f", False),
              ("indexer rows/s after (alone)", "indexer_rate_after", ",.0f", True),
              ("indexer caught up, s after writer", "caught_up_s", ".1f", False),
              ("server CPU ms/1,000, writing", "server_cpu_ms_per_1000", ".1f", False),
              ("replica CPU ms/1,000, writing", "client_cpu_ms_per_1000", ".1f", False),
              ("server CPU ms/1,000, all", "server_cpu_total_ms_per_1000", ".1f", False),
              ("replica CPU ms/1,000, all", "client_cpu_total_ms_per_1000", ".1f", False))
    names = [n for n in ("new", "old") if results[n]]
    print(f"\n{'median (range) over rounds':<32} {'this tree':>26} "
          f"{'baseline ' + baseline:>26} {'ratio':>6}")
    for label, key, spec, _higher_better in fields:
        cells = {}
        medians: dict[str, float | None] = {}
        for name in names:
            values = [r[key] for r in results[name] if r.get(key) is not None]
            medians[name] = statistics.median(values) if values else None
            cells[name] = "-" if not values else (
                f"{_fmt(medians[name], spec)} ({_fmt(min(values), spec)}-"
                f"{_fmt(max(values), spec)})")
        print(f"{label:<32} {cells.get('new', '-'):>26} {cells.get('old', '-'):>26} "
              f"{_ratio(medians.get('new'), medians.get('old')):>6}")
    for name, label in (("new", "this tree"), ("old", "baseline")):
        if wal[name]:
            rows = sum(r["rows"] for r in results[name])
            print(f"WAL {label}: {sum(w[0] for w in wal[name]) / rows:,.0f} bytes per row, "
                  f"full-page images {sum(w[1] for w in wal[name]):,.0f}, checkpoints "
                  f"{sum(w[3] for w in wal[name]):,.0f} (all rounds, writer and indexer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60_000, help="rows ingested per run")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="rows/s spooled while running (0: as fast as the writer goes)")
    parser.add_argument("--batch", type=int, default=5000,
                        help="the writer's batch (the server's default)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--durable", action="store_true",
                        help="fsync, synchronous_commit, full_page_writes on, with the WAL "
                             "settings the README recommends (see bench/pg_ingest.py)")
    parser.add_argument("--prefill", type=int, default=0,
                        help="rows (with their search index) in the database before the run")
    parser.add_argument("--drain-s", type=float, default=60.0,
                        help="after the writer is done, how long the indexer may go on alone")
    parser.add_argument("--baseline", default=BASELINE, help="a commit run beside this tree; "
                        "'' for none")
    args = parser.parse_args()
    if args.prefill:
        args.rounds = 1  # this tree's migrations run on the database after the baseline's run
    import psycopg

    from tests.pg_cluster import PgCluster

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{args.rows:,} rows per run, rate {args.rate or 'flat out'}, "
          f"prefill {args.prefill:,}, {'durable' if args.durable else 'not durable'}",
          flush=True)
    results: dict[str, list[dict[str, Any]]] = {"new": [], "old": []}
    wal: dict[str, list[tuple[float, ...]]] = {"new": [], "old": []}
    with tempfile.TemporaryDirectory(prefix="tl-pg-together-") as tmp_name:
        tmp = Path(tmp_name)
        pool_file = tmp / "pool.jsonl"
        pool = write_pool(pool_file, POOL_ROWS)
        old = baseline_tree(args.baseline, tmp / "baseline") if args.baseline else None
        cluster = PgCluster.start({**DURABLE, **PRODUCTION_WAL} if args.durable else None)
        try:
            if args.durable:
                warm_wal(cluster.admin_url())
            shared = None
            if args.prefill:
                shared = cluster.create_database()
                migrate_with(old or ROOT, shared)
                took = prefill(shared, pool, args.prefill)
                print(f"prefilled {args.prefill:,} rows in {took:.0f} s", flush=True)
            for n in range(args.rounds):
                trees = [(ROOT, "new"), *([(old, "old")] if old else [])]
                if shared is not None or n % 2:
                    trees.reverse()  # a prefilled database: the baseline first
                for root, name in trees:
                    assert root is not None
                    url = shared or cluster.create_database()
                    if shared is not None:
                        with psycopg.connect(cluster.admin_url(), autocommit=True) as admin:
                            admin.execute("CHECKPOINT")
                    before = wal_counters(cluster.admin_url())
                    got = run_tree(root, url, pool_file, args, f"{name}{n}",
                                   tmp / f"spool-{name}{n}")
                    wal[name].append(tuple(b - a for a, b in zip(
                        before, wal_counters(cluster.admin_url()), strict=True)))
                    results[name].append(got)
                    print(f"  round {n} {name}: writer {got['writer_rate']:,.0f} rows/s, "
                          f"indexer {got['indexer_rate_during']:,.0f} meanwhile, backlog "
                          f"{got['backlog_end']:,} at {got['writer_s']:.1f} s, then "
                          f"{_fmt(got['indexer_rate_after'])} rows/s alone, caught up "
                          f"{_fmt(got.get('caught_up_s'), '.1f')} s after the writer "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
                    if shared is None:
                        cluster.drop_database(url)
        finally:
            cluster.stop()
    report(results, wal, args.baseline)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
