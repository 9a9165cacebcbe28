"""What one read-only query may make Postgres build: peak backend memory and time to answer.

    python bench/pg_sql_memory.py [--url postgresql://reader@host:port/db] [--together 3]

Runs each query below through storage/sql.py (the path POST /admin/sql and `tuneloop sql`
take: the name and size check, READ ONLY transaction, statement timeout, server-side cursor),
alone and then `--together` at once (what N replicas did before one query per token held
across replicas), and prints for each run the answer (or the refusal), the seconds it took and
the peak RSS of the Postgres backend(s) that ran it (VmHWM, read from /proc while they run:
run it on the database's host). Without --url a throwaway cluster is started
(tests/pg_cluster.py). The load average is printed with each figure (shared machines).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.sql import SqlLimits, answer_json, open_pg_for_sql  # noqa: E402
from tuneloop.errors import TuneloopError  # noqa: E402

QUERIES = (
    # the review's query (r12w MED 3): 1,000 values of 1M characters into one string
    "select length(string_agg(repeat('x',1000000), '')) from generate_series(1,1000)",
    "select length(repeat('x', 200000000))",
    # the same size from values under the builders' cap: bounded by Postgres's 1 GB per value
    "select length(string_agg(repeat('x',100000), '')) from generate_series(1,10000)",
    # the same value without counting its characters (octet_length reads the header): where
    # the time past the limit goes (a 1 GB length() is one call that is not interrupted)
    "select octet_length(string_agg(repeat('x',100000), '')) from generate_series(1,10000)",
    # ordinary analytics
    "select g % 7, string_agg(g::text, ',') from generate_series(1, 100000) g group by 1",
)


def peak_mb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def run_one(url: str, sql: str, limits: SqlLimits, out: list[str], peaks: list[int]) -> None:
    con = open_pg_for_sql(url)
    pid = con.raw.info.backend_pid
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], peak_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        answer = answer_json(con, sql, limits)[:80].decode(errors="replace")
    except TuneloopError as exc:
        answer = f"{exc.code}: {exc.message[:70]}"
    finally:
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        con.close()
    out.append(f"{elapsed:5.1f} s  {answer}")
    peaks.append(peak[0])


def measure(url: str, sql: str, together: int, limits: SqlLimits) -> None:
    out: list[str] = []
    peaks: list[int] = []
    load = os.getloadavg()[0]
    threads = [threading.Thread(target=run_one, args=(url, sql, limits, out, peaks))
               for _ in range(together)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"  x{together} (load {load:.1f}): peak backend RSS {sum(peaks)} MB total "
          f"{peaks}", flush=True)
    for line in out:
        print(f"    {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--together", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    limits = SqlLimits(timeout_s=args.timeout)
    cluster = None
    url = args.url
    if url is None:
        from tests.pg_cluster import PgCluster

        cluster = PgCluster.start()
        url = cluster.create_database()
    try:
        for sql in QUERIES:
            print(sql, flush=True)
            measure(url, sql, 1, limits)
            measure(url, sql, args.together, limits)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
