"""Migration 51 (the tsvector of search_docs) on an existing Postgres store: what it costs.

A local Postgres (tests/pg_cluster.py; `--durable`: fsync and the README's WAL settings) gets
a store with every migration but 51 (main's schema) holding `--rows` interactions with their
search index (bench/pg_ingest_together.py's prefill: its pool of chat rows), then this
tree's migration 51 is timed in the steps a rolling deploy takes them:

- `migrate`: the migration itself, as a replica's start runs it (the column, the trigger: a
  catalog change under a brief lock, no rewrite),
- `startup chunks`: what that start then fills (storage.store, STARTUP_VECTOR_CHUNKS),
- `fill`: the rest of the rows' lexemes, chunk by chunk as the indexer fills them
  (storage.search_vectors.fill_chunk, FILL_CHUNK_ROWS each), in ms per 1,000 rows too,
- `GIN`: the index built CONCURRENTLY, then `ANALYZE`,

and the sizes of search_docs (table + TOAST) and of the new index against the postings'
(search_terms and its index). Run from the repository root:

    python bench/pg_migration51.py --rows 300000 --durable

The figures move with a shared machine's load: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pg_ingest import DURABLE, PRODUCTION_WAL, warm_wal  # noqa: E402
from bench.pg_ingest_together import POOL_ROWS, prefill, write_pool  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def size(con: object, relation: str) -> str:
    rows = con.execute(  # type: ignore[attr-defined]
        f"SELECT pg_size_pretty(pg_total_relation_size(to_regclass('{relation}')))").fetchall()
    return str(rows[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--durable", action="store_true")
    args = parser.parse_args()

    import psycopg

    from storage.backend.pg_connection import PgConnection
    from storage.migrations import MIGRATIONS, migrate
    from storage.migrations.runner import run
    from storage.search_vectors import (
        FILL_CHUNK_ROWS,
        INDEX,
        MIGRATION,
        fill_chunk,
        vectors_ready,
    )
    from storage.store import STARTUP_VECTOR_CHUNKS
    from tests.pg_cluster import PgCluster

    print(f"load average before: {load()}; {args.rows:,} rows, "
          f"{'durable' if args.durable else 'not durable'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tl-pg-m51-") as tmp_name:
        pool = write_pool(Path(tmp_name) / "pool.jsonl", POOL_ROWS)
        cluster = PgCluster.start({**DURABLE, **PRODUCTION_WAL} if args.durable else None)
        try:
            if args.durable:
                warm_wal(cluster.admin_url())
            url = cluster.create_database()
            raw = psycopg.connect(url, autocommit=True, options="-c timezone=UTC")
            con = PgConnection(raw, ddl=True)
            run(con, [m for m in MIGRATIONS if m.version != MIGRATION])  # main's: not 51
            took = prefill(url, pool, args.rows)
            con.execute("VACUUM ANALYZE")
            with psycopg.connect(cluster.admin_url(), autocommit=True) as admin:
                admin.execute("CHECKPOINT")
            print(f"store without migration 51: {args.rows:,} rows in {took:.0f} s; search_docs "
                  f"{size(con, 'search_docs')}, search_terms {size(con, 'search_terms')} "
                  f"(load {load()})", flush=True)

            start = time.perf_counter()
            migrate(con)
            migrated = time.perf_counter() - start
            print(f"migrate (51 alone): {migrated * 1000:,.1f} ms (load {load()})", flush=True)

            start = time.perf_counter()
            after: str | None = ""
            for _ in range(STARTUP_VECTOR_CHUNKS):
                after = fill_chunk(con, after or "")
                if after is None:
                    break
            startup = time.perf_counter() - start
            print(f"startup chunks ({STARTUP_VECTOR_CHUNKS} x {FILL_CHUNK_ROWS:,} rows): "
                  f"{startup:.2f} s (load {load()})", flush=True)

            start = time.perf_counter()
            chunks = 0
            while after is not None:
                after = fill_chunk(con, after)
                chunks += 1
            fill = time.perf_counter() - start
            filled = max(0, args.rows - STARTUP_VECTOR_CHUNKS * FILL_CHUNK_ROWS)
            per_1000 = (startup + fill) * 1000 * 1000 / args.rows
            print(f"fill (the rest, {chunks} chunks, {filled:,} rows): {fill:.1f} s; "
                  f"all rows {per_1000:.1f} ms per 1,000 (load {load()})", flush=True)

            start = time.perf_counter()
            con.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON search_docs USING gin (lexemes)")
            gin = time.perf_counter() - start
            start = time.perf_counter()
            con.execute("ANALYZE search_docs")
            analyze = time.perf_counter() - start
            assert vectors_ready(con)
            print(f"GIN built concurrently: {gin:.1f} s, ANALYZE {analyze:.1f} s "
                  f"(load {load()})", flush=True)
            total = migrated + startup + fill + gin + analyze
            print(f"\ntotal {total:.1f} s for {args.rows:,} rows; search_docs now "
                  f"{size(con, 'search_docs')} (its GIN {size(con, INDEX)}), search_terms "
                  f"{size(con, 'search_terms')}")
            con.execute("VACUUM search_docs")  # the fill's UPDATEs left the old versions
            print(f"after VACUUM: search_docs {size(con, 'search_docs')}")
            raw.close()
        finally:
            cluster.stop()
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
