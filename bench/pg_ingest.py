"""Ingest throughput: spooled interactions into Postgres, side by side with DuckDB.

Realistic rows (chat request and response JSON of 2-4 KB, varied text, tags, a user id) are
spooled with the real `LogWriter`, then ingested; the script prints rows/s for:

- `insert`: `storage.records.insert_interactions` alone, as the writer calls it (COPY, the
  untrainable list, the rows listed for the search indexer), one batch size at a time,
- `writer`: the whole ingest of the server (`LogWriter.ingest_pending`: spool segments parsed in
  Arrow, usage estimated, rows inserted and listed for the indexer), as the server builds it;
  the spool is sealed every `--batch` rows, as the server seals it every interval; a segment
  is taken in pieces (parsed while the database takes the piece before); `writer1` the same
  with each segment in one piece (as before the pieces), on a quarter of the rows each,
- `indexer`: the background search indexer (`storage.search_queue`) indexing those rows
  (tokenized in this process; the server uses its compute worker),
- `bound`: the store alone, the same rows put into a bare table like `interactions` (Postgres:
  COPY of CSV made beforehand; DuckDB: INSERT from Arrow): what the machine allows at the
  moment (on a shared machine the figures move with its load),

into a throwaway local Postgres cluster (tests/pg_cluster.py: fsync off, as in the tests) and
into a DuckDB file, and the ratios. Run from the repository root:

    python bench/pg_ingest.py                   # 20,000 rows, batches of 2,000
    python bench/pg_ingest.py --rows 50000 --batch 5000 --url postgresql://me@host/db

With --url the rows go into that (empty, migrated here) database instead of a throwaway one.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.pricing import PriceMap  # noqa: E402
from proxy.usage_estimate import UsageEstimator  # noqa: E402
from storage.records import insert_interactions, to_arrow  # noqa: E402
from storage.search_index import SearchIndexer, queue_for_index  # noqa: E402
from storage.search_queue import BackgroundIndexer  # noqa: E402
from storage.spool import Spool  # noqa: E402
from storage.store import Store, migrate_store, open_store  # noqa: E402
from storage.writer import PIECE_ROWS, LogWriter  # noqa: E402

_WORD_TEXT = ("refund policy customer order invoice shipping delay account password reset "
              "billing subscription cancel upgrade plan support ticket warranty return label "
              "address payment card declined discount coupon delivery tracking number escalate "
              "manager thanks please help urgent today tomorrow week")
WORDS = tuple(_WORD_TEXT.split(" "))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_row(rng: random.Random, n: int) -> dict[str, Any]:
    """One chat interaction as the proxy spools it (request + response about 2-4 KB)."""
    question = _text(rng, rng.randint(150, 330))
    answer = _text(rng, rng.randint(100, 250))
    request = ('{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a '
               'helpful support agent."},{"role":"user","content":"' + question + '"}],'
               '"temperature":0.2}')
    response = ('{"id":"chatcmpl-' + uuid.uuid4().hex + '","object":"chat.completion",'
                '"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",'
                '"content":"' + answer + '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":'
                + str(len(question) // 4) + ',"completion_tokens":' + str(len(answer) // 4) + '}}')
    return {
        "id": str(uuid.uuid4()), "created_at": 1_764_460_800_000_000 + n * 1000,
        "endpoint": "chat.completions", "model": "gpt-4o-mini",
        "upstream_model": "gpt-4o-mini", "provider": "openai",
        "route": '{"alias":"support","target":"openai/gpt-4o-mini"}', "traffic": "live",
        "request": request, "response": response, "status_code": 200, "finish": "stop",
        "error": None, "latency_ms": 412.5, "ttfb_ms": 120.0,
        "prompt_tokens": len(question) // 4, "completion_tokens": len(answer) // 4,
        "cost_usd": 0.00021, "stream": False, "tags": ["support", f"team-{n % 7}"],
        "user_id": f"user-{n % 500}", "session_id": f"s-{n % 2000}",
        "metadata": '{"app":"helpdesk"}', "usage_estimated": False, "source_id": None,
    }


def bench_insert(db: Store, rows: list[dict[str, Any]], batch: int) -> float:
    tables = [to_arrow(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    start = time.perf_counter()
    inserted = sum(db.write_sync(lambda con, t=t: insert_interactions(
        con, t, then=queue_for_index)) for t in tables)
    elapsed = time.perf_counter() - start
    assert inserted == len(rows), (inserted, len(rows))
    # replay: idempotent on id
    again = sum(db.write_sync(lambda con, t=t: insert_interactions(
        con, t, then=queue_for_index)) for t in tables)
    assert again == 0, again
    return len(rows) / elapsed


def bench_copy_bound(url: str, rows: list[dict[str, Any]], batch: int) -> float:
    """Postgres alone: the same rows COPYed (CSV made beforehand, not timed) into a bare table
    like `interactions` (its key, nothing else): what this machine allows at the moment."""
    import psycopg

    from storage.backend.pg_copy import csv_for_copy

    tables = [to_arrow(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    data = [csv_for_copy(t) for t in tables]
    names = ", ".join(tables[0].schema.names)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE TABLE bound_copy (LIKE interactions INCLUDING DEFAULTS "
                    "INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        con.execute("SET default_toast_compression = 'lz4'")
        start = time.perf_counter()
        for chunk in data:
            with con.cursor().copy(f"COPY bound_copy ({names}) FROM STDIN WITH (FORMAT csv)"
                                   .encode()) as copy:
                copy.write(chunk or b"")
        elapsed = time.perf_counter() - start
        con.execute("DROP TABLE bound_copy")
    return len(rows) / elapsed


def bench_duck_bound(path: Path, rows: list[dict[str, Any]], batch: int) -> float:
    """DuckDB alone: the same rows (Arrow tables made beforehand) inserted into a bare table
    with the columns and key of `interactions`."""
    import duckdb

    tables = [to_arrow(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE bound_copy AS SELECT * FROM interactions WHERE false")
        con.execute("ALTER TABLE bound_copy ADD PRIMARY KEY (id)")
        start = time.perf_counter()
        for table in tables:
            con.register("bound_batch", table)
            con.execute("INSERT INTO bound_copy SELECT * FROM bound_batch")
            con.unregister("bound_batch")
        elapsed = time.perf_counter() - start
        con.execute("DROP TABLE bound_copy")
    finally:
        con.close()
    return len(rows) / elapsed


def bench_writer(db: Store, rows: list[dict[str, Any]], batch: int, spool_dir: Path,
                 piece_rows: int | None = None) -> float:
    async def run() -> float:
        spool = Spool(spool_dir, 1 << 34)
        writer = LogWriter(db, spool, batch_rows=batch, prepare=UsageEstimator(PriceMap.load()),
                           after_insert=queue_for_index, piece_rows=piece_rows)
        for n, row in enumerate(rows, start=1):
            writer.log(row)
            if n % batch == 0:  # the server seals its spool every interval: segments
                spool.seal()
        start = time.perf_counter()
        ingested = await writer.ingest_pending()
        elapsed = time.perf_counter() - start
        assert ingested == len(rows), (ingested, len(rows))
        spool.close()
        return len(rows) / elapsed
    return asyncio.run(run())


def bench_indexer(db: Store, rows: int, batch: int) -> float:
    """Every listed row indexed by the background indexer."""
    async def run() -> float:
        indexer = BackgroundIndexer(db, SearchIndexer(None), batch_rows=batch)
        start = time.perf_counter()
        indexed = await indexer.index_pending()
        elapsed = time.perf_counter() - start
        assert indexed == rows and indexer.stats.lag_rows == 0, (indexed, rows)
        return rows / elapsed
    return asyncio.run(run())


def measure(spec: str | Path, rows: list[dict[str, Any]], batch: int, tmp: Path,
            name: str) -> tuple[float, float, float, float]:
    """insert, writer (a segment whole, as before pieces), writer (in pieces), indexer."""
    db = open_store(spec)
    try:
        migrate_store(db)
        half, quarter = len(rows) // 2, len(rows) * 3 // 4
        insert = bench_insert(db, rows[:half], batch)
        whole = bench_writer(db, rows[half:quarter], batch, tmp / f"spool-{name}-whole",
                             piece_rows=batch)
        pieces = bench_writer(db, rows[quarter:], batch, tmp / f"spool-{name}")
        indexer = bench_indexer(db, len(rows), batch)
    finally:
        db.close()
    return insert, whole, pieces, indexer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000,
                        help="rows in all (half for insert, a quarter for each writer)")
    parser.add_argument("--batch", type=int, default=2000, help="rows per insert batch")
    parser.add_argument("--url", help="a Postgres URL to use instead of a throwaway cluster")
    parser.add_argument("--rounds", type=int, default=2,
                        help="each figure is the best of this many rounds (a shared machine's "
                             "load moves them; each round measures its bound beside its paths)")
    args = parser.parse_args()

    rng = random.Random(12)
    rows = [make_row(rng, n) for n in range(args.rows)]
    size = sum(len(r["request"]) + len(r["response"]) for r in rows) / len(rows)
    print(f"{args.rows} rows, request+response {size / 1024:.1f} KB on average, "
          f"batches of {args.batch}")

    with tempfile.TemporaryDirectory(prefix="tl-pg-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        cluster = None
        url = args.url
        if url is None:
            from tests.pg_cluster import PgCluster
            cluster = PgCluster.start()
            url = cluster.create_database()
        try:
            runs: list[tuple[float, ...]] = []
            for n in range(args.rounds):
                batch_rows = [dict(r, id=str(uuid.uuid4())) for r in rows] if n else rows
                half = batch_rows[: len(rows) // 2]
                runs.append((*measure(url, batch_rows, args.batch, tmp, f"pg{n}"),
                             bench_copy_bound(url, half, args.batch),
                             *measure(tmp / "bench.duckdb", batch_rows, args.batch, tmp,
                                      f"duck{n}"),
                             bench_duck_bound(tmp / "bench.duckdb", half, args.batch)))
            best = [max(column) for column in zip(*runs, strict=True)]
            pg, bound, duck, duck_bound = best[0:4], best[4], best[5:9], best[9]
        finally:
            if cluster is not None:
                cluster.stop()

    print(f"{'path':<8} {'postgres rows/s':>16} {'/bound':>7} {'duckdb rows/s':>14} "
          f"{'/bound':>7} {'pg/duck':>8}")
    for label, p, d in (("insert", pg[0], duck[0]), ("writer1", pg[1], duck[1]),
                        ("writer", pg[2], duck[2]), ("indexer", pg[3], duck[3]),
                        ("bound", bound, duck_bound)):
        print(f"{label:<8} {p:>16,.0f} {p / bound:>7.2f} {d:>14,.0f} {d / duck_bound:>7.2f} "
              f"{p / d:>8.2f}")
    print(f"writer1: a segment parsed whole, then written (before); writer: as the server "
          f"does (Postgres: in pieces of {PIECE_ROWS} rows, parsed while the database takes "
          "the piece before; DuckDB: whole)")
    print(f"best of {args.rounds} rounds each")
    print("bound: the same rows alone into a bare table (Postgres: COPY of ready CSV, lz4; "
          "DuckDB: INSERT from Arrow)")


if __name__ == "__main__":
    main()
