"""Migration 52 (the Stats indexes) on a Postgres store with rows: how long ingest waits.

A local Postgres (tests/pg_cluster.py) gets a store at migration 51 holding `--rows`
interactions (about 1 KB of request and response JSON each, like chat rows; review r12x2's
300,000 rows were 307 MB of heap), then copied (CREATE DATABASE ... TEMPLATE) once per variant:

- `before`: migration 52 as it was, its two indexes built by a plain CREATE INDEX in the
  migration's transaction (a SHARE lock on interactions to the commit);
- `after`: migration 52 as it is (the function and the vacuum setting), then its indexes built
  CONCURRENTLY (storage.online_indexes, as the leading replica's indexer runs it).

Meanwhile one connection inserts interactions one by one, as fast as it can (a replica's
ingest, old or new: an INSERT is an INSERT), and the bench prints the longest and the 99th
percentile INSERT wait during the upgrade (migration + online build), against the same
connection's longest wait in the second before it. Run from the repository root:

    python bench/pg_migration52_stall.py --rows 300000

The figures move with a shared machine's load: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILL = ("INSERT INTO interactions (id, created_at, endpoint, model, traffic, request, response, "
        "status_code, prompt_tokens, completion_tokens, tags, user_id) "
        "SELECT {prefix} || lpad(g::text, 10, '0'), timestamptz '2026-01-01' + g * "
        "interval '1 second', 'chat.completions', 'gpt-4o-mini-' || (g % 7), 'production', "
        "json_build_object('messages', json_build_array(json_build_object('role', 'user', "
        "'content', repeat('question ' || g || ' ', 25)))), json_build_object('choices', "
        "json_build_array(json_build_object('message', json_build_object('role', 'assistant', "
        "'content', repeat('answer ' || g || ' ', 40))))), 200, 40 + g % 900, 20 + g % 400, "
        "ARRAY['t' || (g % 5)], 'u' || (g % 1000) FROM generate_series({low}, {high}) g")
OLD_52 = [  # main's migration 52, after its function: built in the migration's transaction
    "CREATE INDEX interactions_stats ON interactions (created_at) INCLUDE (endpoint, model, "
    "prompt_tokens, completion_tokens, tags) WHERE tuneloop_stats_fits(endpoint, model, tags)",
    "CREATE INDEX interactions_stats_wide ON interactions (created_at) "
    "WHERE NOT tuneloop_stats_fits(endpoint, model, tags)"]


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


class Ingest(threading.Thread):
    """Inserts rows one at a time, each its own transaction; keeps (start, wait) of each."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.waits: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            n = 0
            while not self.stop.is_set():
                n += 1
                sql = FILL.format(prefix="'live-'", low=n, high=n)
                start = time.perf_counter()
                con.execute(sql.encode())
                self.waits.append((start, time.perf_counter() - start))

    def between(self, low: float, high: float) -> list[float]:
        return [w for s, w in self.waits if low <= s < high]


def variant(url: str, name: str, upgrade: Callable[[Any], dict[str, float]]) -> None:
    import psycopg

    from storage.backend.pg_connection import PgConnection

    raw = psycopg.connect(url, autocommit=True, options="-c timezone=UTC")
    con = PgConnection(raw, ddl=True)
    ingest = Ingest(url)
    ingest.start()
    time.sleep(1.5)
    began = time.perf_counter()
    steps = upgrade(con)
    ended = time.perf_counter()
    time.sleep(0.5)
    ingest.stop.set()
    ingest.join()
    raw.close()
    quiet = ingest.between(began - 1.0, began)
    during = sorted(ingest.between(began, ended))
    p99 = during[int(len(during) * 0.99) - 1] if during else float("nan")
    print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
          + f"; INSERTs during it: {len(during)}, longest wait {max(during, default=0):.3f} s, "
          f"p99 {p99:.3f} s, median {statistics.median(during) if during else 0:.4f} s; "
          f"longest in the second before {max(quiet, default=0):.3f} s (load {load()})",
          flush=True)


def before(con: Any) -> dict[str, float]:
    from storage.migrations import m052_stats_index
    from storage.transaction import transaction

    start = time.perf_counter()
    with transaction(con):
        m052_stats_index.apply(con)
        for statement in OLD_52:
            con.execute(statement)
        con.execute("INSERT INTO _migrations VALUES (52, 'stats_index', now())")
    return {"migration": time.perf_counter() - start}


def after(con: Any) -> dict[str, float]:
    from storage.migrations import migrate
    from storage.online_indexes import build_indexes, due

    start = time.perf_counter()
    migrate(con)
    migrated = time.perf_counter() - start
    assert [ix.name for ix in due(con)] == ["interactions_stats", "interactions_stats_wide"]
    start = time.perf_counter()
    assert build_indexes(con)
    return {"migration": migrated, "online build": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()

    import psycopg

    from storage.backend.pg_connection import PgConnection
    from storage.migrations import migrate
    from storage.online_indexes import build_indexes
    from tests.pg_cluster import PgCluster

    print(f"load average before: {load()}; {args.rows:,} rows", flush=True)
    cluster = PgCluster.start()
    try:
        url = cluster.create_database()
        with psycopg.connect(url, autocommit=True, options="-c timezone=UTC") as raw:
            con = PgConnection(raw, ddl=True)
            migrate(con, up_to=51)
            build_indexes(con)  # a store at 51 has the indexes of the migrations before
            start = time.perf_counter()
            for low in range(1, args.rows + 1, 50_000):
                con.execute(FILL.format(prefix="'r'", low=low,
                                        high=min(args.rows, low + 49_999)))
            con.execute("VACUUM ANALYZE interactions")
            heap = con.execute("SELECT pg_size_pretty(pg_relation_size('interactions'))"
                               ).fetchall()[0][0]
        print(f"store at migration 51: {args.rows:,} rows in {time.perf_counter() - start:.0f}"
              f" s, interactions heap {heap} (load {load()})", flush=True)
        base = url.rsplit("/", 1)[1]
        with psycopg.connect(cluster.admin_url(), autocommit=True) as admin:
            for name, upgrade in (("before", before), ("after", after)):
                copy = f"{base}_{name}"
                owner = psycopg.conninfo.conninfo_to_dict(url)["user"]
                admin.execute(f"CREATE DATABASE {copy} TEMPLATE {base} OWNER {owner}".encode())
                admin.execute("CHECKPOINT")
                variant(url.rsplit("/", 1)[0] + "/" + copy, name, upgrade)
                admin.execute(f"DROP DATABASE {copy} WITH (FORCE)".encode())
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
