"""What the search indexer's writes cost Postgres, by the shape of the index written.

The same forward index of realistic chat rows (bench/pg_ingest.py's rows, tokenized once
beforehand, not timed) is written batch by batch into a fresh database per layout, as
`storage.search_index.store_forward_index` writes it (COPY, one transaction per batch), and
the script prints rows/s, the server's CPU per 1,000 interactions (the figure a shared
machine's load moves least) and the bytes on disk per interaction:

- `postings+2`: search_docs and one search_terms row per term of an interaction, with the
  (term_key, interaction_id) index and the index by interaction (main before migration 48),
- `postings+1`: the same without the index by interaction (migration 48),
- `docs`: search_docs alone (the per-interaction term keys; no postings),
- `docs+gin`: search_docs with a GIN index on term_keys (fastupdate on, as by default) in
  place of the postings, a layout not taken (search would need its own plan choice: for a
  rare term the planner took the newest-first key scan, seconds at 1M docs),
- `docs+gin-fu`: the same with fastupdate off (each key merged at once).

Run from the repository root:

    python bench/pg_index_write.py --rows 20000 --durable
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pg_ingest import DURABLE, PRODUCTION_WAL, make_row, uuid7_at, warm_wal  # noqa: E402

LAYOUTS: dict[str, tuple[bool, list[str]]] = {  # writes postings?, DDL after migrating
    "postings+2": (True, ["CREATE INDEX IF NOT EXISTS search_terms_by_interaction ON "
                          "search_terms (interaction_id)"]),
    "postings+1": (True, ["DROP INDEX IF EXISTS search_terms_by_interaction"]),
    "docs": (False, []),
    "docs+gin": (False, ["CREATE INDEX docs_gin ON search_docs USING gin (term_keys)"]),
    "docs+gin-fu": (False, ["CREATE INDEX docs_gin ON search_docs USING gin (term_keys) "
                            "WITH (fastupdate = off)"]),
}


def backend_cpu(raw: Any) -> float:
    pid = raw.execute("SELECT pg_backend_pid()").fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2000, help="the indexer's batch")
    parser.add_argument("--durable", action="store_true",
                        help="fsync, synchronous_commit, full_page_writes on, with "
                             "bench/pg_ingest.py's PRODUCTION_WAL")
    args = parser.parse_args()
    import psycopg
    import pyarrow as pa
    import pyarrow.compute as pc

    from storage.backend.pg_connection import PgConnection
    from storage.records import to_arrow
    from storage.search_index import TERMS_SCHEMA, batch_forward_index
    from storage.store import migrate_store, open_store
    from tests.pg_cluster import PgCluster

    rng, ids = random.Random(12), random.Random(7)
    rows = [dict(make_row(rng, n), id=uuid7_at(1_764_460_800_000 + n, ids))
            for n in range(args.rows)]
    forwards = [batch_forward_index(to_arrow(rows[i:i + args.batch]))
                for i in range(0, len(rows), args.batch)]
    postings = []
    for forward in forwards:
        keys = forward.docs["term_keys"].combine_chunks()
        postings.append(pa.table(
            [keys.flatten(), forward.docs["interaction_id"].take(pc.list_parent_indices(keys)),
             forward.docs["term_fields"].combine_chunks().flatten()], schema=TERMS_SCHEMA))
    per_row = sum(p.num_rows for p in postings) / args.rows
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.rows:,} "
          f"rows, {per_row:.1f} postings each, batches of {args.batch}, "
          f"{'durable' if args.durable else 'not durable'}")
    cluster = PgCluster.start({**DURABLE, **PRODUCTION_WAL} if args.durable else None)
    try:
        if args.durable:
            warm_wal(cluster.admin_url())
        print(f"{'layout':<12} {'rows/s':>9} {'server CPU ms/1,000':>20} {'bytes/row':>10}")
        for name, (with_postings, ddl) in LAYOUTS.items():
            url = cluster.create_database()
            db = open_store(url)
            migrate_store(db)
            db.close()
            with psycopg.connect(url, autocommit=True) as raw:
                for statement in ddl:
                    raw.execute(statement.encode())
                con = PgConnection(raw)
                cpu, start = backend_cpu(raw), time.perf_counter()
                for forward, posting in zip(forwards, postings, strict=True):
                    with raw.transaction():
                        con.copy_rows("search_docs", forward.docs)
                        if with_postings:
                            con.copy_rows("search_terms", posting)
                elapsed, cpu = time.perf_counter() - start, backend_cpu(raw) - cpu
                size = raw.execute("SELECT pg_total_relation_size('search_docs') + "
                                   "pg_total_relation_size('search_terms')").fetchone()
                assert size is not None
            print(f"{name:<12} {args.rows / elapsed:>9,.0f} {cpu / args.rows * 1e6:>20.1f} "
                  f"{size[0] / args.rows:>10,.0f}", flush=True)
            cluster.drop_database(url)
    finally:
        cluster.stop()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
