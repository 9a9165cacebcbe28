"""Ingest throughput: spooled interactions into Postgres, side by side with DuckDB.

Realistic rows (chat request and response JSON of 2-4 KB, varied text, tags, a user id, an
id as the proxy makes it: a UUIDv7, time-ordered, so the key index is appended to) are
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
  COPY of input made beforehand, in the binary format ingest writes; `bound-txt` the same in
  COPY's text format, as ingest wrote before, interleaved with it; DuckDB: INSERT from
  Arrow): what the machine allows at the moment (on a shared machine the figures move with
  its load),

into a throwaway local Postgres cluster (tests/pg_cluster.py: fsync, synchronous_commit and
full_page_writes off, as in the tests; `--durable` turns them on, with the WAL settings the
README recommends for a production store, `PRODUCTION_WAL`, and the WAL segments made once and
then recycled, as on a server that has been running) and into a DuckDB file, and the ratios.
Then, unless `--baseline ''`, this tree's writer and a baseline commit's (by default the one
before the COPY binary format), each in a process of its own, into a fresh database, in turn,
on the same rows: rows/s and the server's CPU per 1,000 rows of each (the CPU figure is the one
a shared machine's load moves least), their ratios, and the WAL each wrote. Run from the
repository root:

    python bench/pg_ingest.py                   # 20,000 rows, batches of 2,000
    python bench/pg_ingest.py --rows 50000 --batch 5000 --url postgresql://me@host/db

With --url the rows go into that (empty, migrated here) database instead of a throwaway one.
The writer with the search indexer running beside it, as a replica runs them:
bench/pg_ingest_together.py; the indexer's writes by index layout: bench/pg_index_write.py.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
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
BASELINE = "84cef5c"  # main before the COPY binary format (text format), for --baseline
DURABLE = dict.fromkeys(("fsync", "synchronous_commit", "full_page_writes"), "on")
PRODUCTION_WAL = {
    # WAL settings the README recommends for a Postgres taking tuneloop's ingest; durability
    # stays whole. Full-page images compressed; WAL buffered before the writing backend must
    # write it itself (16MB: the default once shared_buffers is 512MB or more); checkpoints
    # (each followed by full-page images of every page touched again) by time, not every GB;
    # a GB of WAL segments kept for reuse (a new segment is 16MB written with zeroes and
    # fsynced by the backend that needs it, while the ingest transaction waits)
    "wal_compression": "lz4", "wal_buffers": "16MB", "max_wal_size": "4GB",
    "min_wal_size": "1GB", "checkpoint_timeout": "15min",
}
WARM_SEGMENTS = 24  # WAL segments made before measuring (--durable), then recycled


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def uuid7_at(millis: int, rng: random.Random) -> str:
    """An id as the proxy makes them (proxy.ids.uuid7: the time in milliseconds first, then
    random bits), for the time given: ids of rows made later sort after, so the index on
    `id` is appended to, as in production (random ids cost its inserts more)."""
    value = ((millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
             | 0b10 << 62 | rng.getrandbits(62))
    return str(uuid.UUID(int=value))


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


def bench_copy_bound(url: str, rows: list[dict[str, Any]], batch: int) -> tuple[float, float]:
    """Postgres alone: the same rows COPYed (input made beforehand, not timed) into a bare
    table like `interactions` (its key and indexes): what this machine allows at the moment.
    Twice, interleaved batch by batch: in COPY's binary format (as ingest writes them now) and
    in its text format (as it wrote them before). Rows/s of each."""
    import psycopg

    from storage.backend.pg_copy import text_for_copy
    from storage.backend.pg_copy_binary import HEADER, TRAILER, binary_for_copy

    tables = [to_arrow(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    binary = [binary_for_copy(t) for t in tables]
    formats = {"binary": (" (FORMAT binary)", [HEADER + bytes(b.rows) + TRAILER
                                               for b in binary if b is not None]),
               "text": ("", [bytes(text_for_copy(t) or b"") for t in tables])}
    names = ", ".join(tables[0].schema.names)
    elapsed = dict.fromkeys(formats, 0.0)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SET default_toast_compression = 'lz4'")
        for kind in formats:
            con.execute(f"CREATE TABLE bound_{kind} (LIKE interactions INCLUDING DEFAULTS "
                        "INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        for n in range(len(tables)):
            for kind, (options, data) in formats.items():
                start = time.perf_counter()
                with con.transaction(), con.cursor().copy(
                        f"COPY bound_{kind} ({names}) FROM STDIN{options}".encode()) as copy:
                    copy.write(data[n])
                elapsed[kind] += time.perf_counter() - start
        for kind in formats:
            con.execute(f"DROP TABLE bound_{kind}")
    return len(rows) / elapsed["binary"], len(rows) / elapsed["text"]


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


_WRITER_DRIVER = """
import os, random, sys, uuid
from pathlib import Path
import psycopg
from bench.pg_ingest import bench_writer, make_row
from storage.store import migrate_store, open_store

url, count, batch, name, spool = sys.argv[1:6]
rng = random.Random(12)
ids = random.Random(name)

def uuid7_at(millis):  # as the proxy makes ids (proxy.ids.uuid7): time-ordered
    return str(uuid.UUID(int=(millis << 80 | 0x7 << 76 | ids.getrandbits(12) << 64
                              | 0b10 << 62 | ids.getrandbits(62))))

rows = [dict(make_row(rng, n), id=uuid7_at(1_764_460_800_000 + n)) for n in range(int(count))]
warm = [dict(make_row(rng, n), id=uuid7_at(1_764_000_000_000 + n)) for n in range(500)]

def server_cpu(before):
    # CPU seconds of this database's server processes (Linux /proc), since `before`
    with psycopg.connect(url, autocommit=True) as con:
        me = con.execute("SELECT pg_backend_pid()").fetchone()[0]
        pids = [p for (p,) in con.execute("SELECT pid FROM pg_stat_activity WHERE "
                "datname = current_database() AND pid <> %s", [me]).fetchall()]
    tick = os.sysconf("SC_CLK_TCK")
    now = {}
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        now[pid] = (int(fields[11]) + int(fields[12])) / tick
    return now, sum(t - before.get(pid, 0.0) for pid, t in now.items())

db = open_store(url)
try:
    migrate_store(db)
    # warmed up as a running server is (first calls load code, kernels, the price map)
    bench_writer(db, warm, len(warm), Path(spool + "-warm"))
    before, _ = server_cpu({})
    rate = bench_writer(db, rows, int(batch), Path(spool))
    _, cpu = server_cpu(before)
finally:
    db.close()
print(rate, cpu / len(rows))
"""


def writer_in(root: Path, url: str, rows: int, batch: int, name: str,
              spool: Path) -> tuple[float, float]:
    """The writer bench of the tree at `root` (this one, or the baseline's), in a process of
    its own, after a warm-up ingest of 500 rows: rows/s and the server's CPU seconds per row
    (the figure the load of a shared machine moves least)."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _WRITER_DRIVER, url, str(rows), str(batch),
                          name, str(spool)], cwd=root, env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"writer bench in {root} failed:\n{out.stderr[-3000:]}")
    rate, cpu = out.stdout.split()[-2:]
    return float(rate), float(cpu)


def baseline_tree(rev: str, into: Path) -> Path:
    """The files of `rev` (a commit of this repository) extracted into `into`."""
    import subprocess

    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def warm_wal(admin_url: str, segments: int = WARM_SEGMENTS) -> None:
    """Make `segments` WAL segment files and checkpoint: later WAL reuses them (renamed), as on
    a server that has been running, instead of each new segment being written full of zeroes
    and fsynced first, which only a fresh cluster pays."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute("CREATE TABLE bench_warm_wal (x int)")
        for _ in range(segments):
            con.execute("INSERT INTO bench_warm_wal VALUES (1)")
            con.execute("SELECT pg_switch_wal()")
        con.execute("DROP TABLE bench_warm_wal")
        con.execute("CHECKPOINT")


def wal_counters(admin_url: str) -> tuple[float, ...]:
    """pg_stat_wal's bytes, full-page images and times the WAL buffers were full, and the
    checkpoints done (pg_stat_bgwriter), cluster-wide."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        row = con.execute("SELECT wal_bytes, wal_fpi, wal_buffers_full, (SELECT "
                          "checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) "
                          "FROM pg_stat_wal").fetchone()
    assert row is not None
    return tuple(float(v) for v in row)


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


def _spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000,
                        help="rows in all (half for insert, a quarter for each writer)")
    parser.add_argument("--batch", type=int, default=2000, help="rows per insert batch")
    parser.add_argument("--url", help="a Postgres URL to use instead of a throwaway cluster")
    parser.add_argument("--rounds", type=int, default=2,
                        help="each figure is the best of this many rounds (a shared machine's "
                             "load moves them; each round measures its bound beside its paths)")
    parser.add_argument("--durable", action="store_true",
                        help="the throwaway cluster with fsync, synchronous_commit and "
                             "full_page_writes on (a production server's settings)")
    parser.add_argument("--baseline", default=BASELINE,
                        help="a commit whose writer runs beside this tree's in each round, on "
                             "the same rows (default: before the COPY text format); '' for none")
    args = parser.parse_args()

    rng, ids = random.Random(12), random.Random(7)
    rows = [make_row(rng, n) for n in range(args.rows)]
    size = sum(len(r["request"]) + len(r["response"]) for r in rows) / len(rows)
    print(f"{args.rows} rows, request+response {size / 1024:.1f} KB on average, "
          f"batches of {args.batch}")

    compared: list[tuple[tuple[float, float], tuple[float, float]]] = []
    wal: dict[str, list[tuple[float, ...]]] = {"new": [], "old": []}
    with tempfile.TemporaryDirectory(prefix="tl-pg-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        cluster = None
        url = args.url
        if url is None:
            from tests.pg_cluster import PgCluster
            cluster = PgCluster.start({**DURABLE, **PRODUCTION_WAL} if args.durable else None)
            if args.durable:
                warm_wal(cluster.admin_url())
            url = cluster.create_database()
        old = baseline_tree(args.baseline, tmp / "baseline") \
            if args.baseline and cluster is not None else None
        try:
            runs: list[tuple[float, ...]] = []
            for n in range(args.rounds):
                # new ids each round, later than the round before's (as time goes on)
                batch_rows = [dict(r, id=uuid7_at(1_764_460_800_000 + n * 10**7 + k, ids))
                              for k, r in enumerate(rows)]
                half = batch_rows[: len(rows) // 2]
                runs.append((*measure(url, batch_rows, args.batch, tmp, f"pg{n}"),
                             *bench_copy_bound(url, half, args.batch),
                             *measure(tmp / "bench.duckdb", batch_rows, args.batch, tmp,
                                      f"duck{n}"),
                             bench_duck_bound(tmp / "bench.duckdb", half, args.batch)))
                if old is not None and cluster is not None:
                    # this tree's writer and the baseline's, each into a fresh database, in
                    # turn (which goes first alternates), on the same rows
                    pair = [(ROOT, "new"), (old, "old")][:: 1 if n % 2 == 0 else -1]
                    got = {}
                    for root, name in pair:
                        target = cluster.create_database()
                        before = wal_counters(cluster.admin_url())
                        got[name] = writer_in(root, target, len(rows) // 2, args.batch,
                                              f"{name}{n}", tmp / f"cmp-{name}{n}")
                        wal[name].append(tuple(b - a for a, b in zip(
                            before, wal_counters(cluster.admin_url()), strict=True)))
                    compared.append((got["new"], got["old"]))
            best = [max(column) for column in zip(*runs, strict=True)]
            pg, bound, bound_text = best[0:4], best[4], best[5]
            duck, duck_bound = best[6:10], best[10]
        finally:
            if cluster is not None:
                cluster.stop()

    print(f"{'path':<9} {'postgres rows/s':>16} {'/bound':>7} {'duckdb rows/s':>14} "
          f"{'/bound':>7} {'pg/duck':>8}")
    for label, p, d in (("insert", pg[0], duck[0]), ("writer1", pg[1], duck[1]),
                        ("writer", pg[2], duck[2]), ("indexer", pg[3], duck[3]),
                        ("bound", bound, duck_bound)):
        print(f"{label:<9} {p:>16,.0f} {p / bound:>7.2f} {d:>14,.0f} {d / duck_bound:>7.2f} "
              f"{p / d:>8.2f}")
    print(f"{'bound-txt':<9} {bound_text:>16,.0f} {bound_text / bound:>7.2f}")
    print(f"writer1: a segment parsed whole, then written (before); writer: as the server "
          f"does (Postgres: in pieces of {PIECE_ROWS} rows, parsed while the database takes "
          "the piece before; DuckDB: whole)")
    settings = ("on, with " + ", ".join(f"{k}={v}" for k, v in PRODUCTION_WAL.items())
                + f" and {WARM_SEGMENTS} WAL segments made beforehand"
                if args.durable else "off (as in the tests)")
    print(f"best of {args.rounds} rounds each; Postgres durability settings {settings}")
    print("bound: the same rows alone into a bare table like interactions (Postgres: COPY of "
          "ready input in the binary format, lz4; bound-txt: the same in the text format, as "
          "before, interleaved with it; DuckDB: INSERT from Arrow)")
    if compared:
        new_rate = [new[0] for new, _ in compared]
        old_rate = [old[0] for _, old in compared]
        ratio = [new[0] / old[0] for new, old in compared]
        new_cpu = [new[1] * 1e6 for new, _ in compared]  # ms per 1,000 rows
        old_cpu = [old[1] * 1e6 for _, old in compared]
        cpu_ratio = [o / n for n, o in zip(new_cpu, old_cpu, strict=True) if n > 0]
        print(f"\nwriter, this tree vs {args.baseline} ({len(rows) // 2} rows each, own "
              f"process and fresh database, in turn, {len(compared)} rounds; median (range)):")
        print(f"  rows/s      this tree {_spread(new_rate)}  baseline {_spread(old_rate)}  "
              f"ratio {_spread(ratio, '.2f')}")
        if cpu_ratio:
            print(f"  server CPU  this tree {_spread(new_cpu, '.1f')} ms  baseline "
                  f"{_spread(old_cpu, '.1f')} ms per 1,000 rows  "
                  f"baseline/this {_spread(cpu_ratio, '.2f')}")
        for name, label in (("new", "this tree"), ("old", "baseline")):
            per_row = [w[0] / (len(rows) // 2) for w in wal[name]]
            print(f"  WAL         {label}: {_spread(per_row)} bytes per row, full-page images "
                  f"{sum(w[1] for w in wal[name]):,.0f}, WAL buffers full "
                  f"{sum(w[2] for w in wal[name]):,.0f} times, checkpoints "
                  f"{sum(w[3] for w in wal[name]):,.0f} (all rounds)")


if __name__ == "__main__":
    main()
