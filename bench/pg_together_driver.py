"""One tree's writer and search indexer running together, as a replica runs them (the child
process of `bench/pg_ingest_together.py`; it runs this file with PYTHONPATH set to the tree
measured, this one or a baseline's, so it imports nothing from bench/).

Wired as proxy/app.py wires them: one store, the compute worker process (the indexer's
tokenizing and usage estimates go there), the writer's loop waking the indexer's after each
ingest. Rows are spooled as the proxy spools them: at `rate` rows/s (0: as fast as the writer
takes them, a batch whenever fewer than AHEAD_BATCHES wait), each a row of the pool with an
id as the proxy makes them. Prints one JSON object: rates, backlog samples, CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from proxy.pricing import PriceMap
from proxy.usage_estimate import UsageEstimator
from storage.compute_worker import ComputeWorker
from storage.search_index import SearchIndexer, queue_for_index
from storage.search_queue import BackgroundIndexer
from storage.spool import Spool
from storage.store import Store, migrate_store, open_store
from storage.writer import LogWriter

WARM_ROWS = 500
SAMPLE_S = 1.0
TICK_S = 0.01
AHEAD_BATCHES = 2  # --rate 0: batches kept spooled ahead of the writer


def uuid7_at(millis: int, rng: random.Random) -> str:
    """As proxy.ids.uuid7 makes them: time first, so the key index is appended to."""
    return str(uuid.UUID(int=(millis << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
                              | 0b10 << 62 | rng.getrandbits(62))))


def cpu_of(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def server_pids(db: Store) -> list[int]:
    def pids(con: Any) -> list[int]:
        return [r[0] for r in con.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
            "pid <> pg_backend_pid()").fetchall()]
    return db.read_sync(pids)


def backlog(db: Store) -> int:
    return int(db.read_sync(lambda con: con.execute(
        "SELECT count(*) FROM search_pending").fetchall()[0][0]))


async def run(url: str, pool_file: str, rows: int, rate: float, batch: int, spool_dir: str,
              seed: str, drain_s: float) -> dict[str, Any]:
    pool = [json.loads(line) for line in Path(pool_file).read_text().splitlines()]
    ids = random.Random(seed)
    base_ms = int(time.time() * 1000)
    db = open_store(url)
    migrate_store(db)
    worker = ComputeWorker()
    spool = Spool(Path(spool_dir), 1 << 36)
    indexer = BackgroundIndexer(db, SearchIndexer(worker, min_rows=200), interval_s=1.0)
    writer = LogWriter(db, spool, batch_rows=batch, interval_s=1.0,
                       prepare=UsageEstimator(PriceMap.load(), worker),
                       after_insert=queue_for_index, on_ingested=indexer.wake)
    made = 0

    def log(count: int) -> None:
        nonlocal made
        for _ in range(count):
            row = pool[made % len(pool)]
            writer.log(dict(row, id=uuid7_at(base_ms + made // 20, ids),
                            created_at=(base_ms * 1000 + made * 50)))
            made += 1

    # warmed up as a running server is: code loaded, the worker started, the price map read
    log(WARM_ROWS)
    await writer.ingest_pending()
    await indexer.index_pending()
    made_before, ingested0 = made, writer.stats.ingested
    first_id = uuid7_at(base_ms + made // 20, random.Random(0))[:13]  # below every id to come
    backlog0 = backlog(db)
    procs = [os.getpid(), worker.worker_pid() or 0]
    servers = server_pids(db)
    client0, server0 = cpu_of(procs), cpu_of(servers)
    samples: list[tuple[float, int, int, int]] = []
    start = time.perf_counter()
    writer.start()
    indexer.start()
    ahead = AHEAD_BATCHES * batch * statistics.mean(len(json.dumps(r)) for r in pool)

    async def produce() -> None:
        while made - made_before < rows:
            if rate:
                due = min(rows, int(rate * (time.perf_counter() - start))) - (made - made_before)
            else:  # flat out: the writer never waits for rows, nor takes them all at once
                due = min(batch, rows - (made - made_before)) if spool.size_bytes < ahead else 0
            if due > 0:
                log(due)
            await asyncio.sleep(TICK_S)

    producer = asyncio.ensure_future(produce())

    def ingested() -> int:
        return writer.stats.ingested - ingested0

    written_at = None
    max_s = rows / 500 + drain_s + 60  # a run this slow is broken, not slow
    while True:
        await asyncio.sleep(SAMPLE_S if written_at is None else 0.2)
        now = time.perf_counter() - start
        # counted in the database (the writer's and the indexer's own counts move only when
        # a call of theirs ends): every row ingested is indexed or listed (all are chat rows)
        pending, indexed = await db.read(lambda con: con.execute(
            "SELECT (SELECT count(*) FROM search_pending), (SELECT count(*) FROM search_docs "
            "WHERE interaction_id >= ?)", [first_id]).fetchall()[0])
        samples.append((round(now, 2), indexed + pending - backlog0, indexed, pending))
        if written_at is None and ingested() >= rows:
            written_at = now
            cpu_window = (cpu_of(procs) - client0, cpu_of(servers + server_pids(db)) - server0)
            indexed_then, backlog_then = indexed, pending
        if written_at is not None and (pending <= backlog0 or now - written_at > drain_s):
            break
        if now > max_s:
            raise RuntimeError(f"not done after {max_s:.0f} s: {samples[-3:]}")
    drained_at = time.perf_counter() - start
    cpu_total = (cpu_of(procs) - client0, cpu_of(servers + server_pids(db)) - server0)
    indexed_all = samples[-1][2]
    await producer
    await indexer.close()
    await writer.close()
    worker.close()
    db.close()
    half = [s for s in samples if s[0] <= written_at and s[0] >= written_at / 2]
    slope = (half[-1][3] - half[0][3]) / (half[-1][0] - half[0][0]) \
        if len(half) >= 2 and half[-1][0] > half[0][0] else None
    return {
        "rows": rows, "rate": rate, "writer_s": written_at, "writer_rate": rows / written_at,
        "indexed_during": indexed_then, "indexer_rate_during": indexed_then / written_at,
        "backlog_end": backlog_then, "backlog_slope": slope,
        "indexer_rate_after": (indexed_all - indexed_then) / (drained_at - written_at)
        if drained_at > written_at else None,
        "backlog_left": samples[-1][3], "drained_s": drained_at,
        # the indexer's lag: from the writer's end until the backlog is back where it was
        # (None: not caught up within drain_s)
        "caught_up_s": drained_at - written_at if samples[-1][3] <= backlog0 else None,
        "client_cpu_ms_per_1000": cpu_window[0] / rows * 1e6,
        "server_cpu_ms_per_1000": cpu_window[1] / rows * 1e6,
        # writer and indexer, until the backlog is gone (or drain_s): per row ingested
        "client_cpu_total_ms_per_1000": cpu_total[0] / rows * 1e6,
        "server_cpu_total_ms_per_1000": cpu_total[1] / rows * 1e6,
        "samples": samples,
    }


def main() -> None:
    url, pool_file, rows, rate, batch, spool_dir, seed, drain_s = sys.argv[1:9]
    result = asyncio.run(run(url, pool_file, int(rows), float(rate), int(batch), spool_dir,
                             seed, float(drain_s)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
