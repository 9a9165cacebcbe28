"""One wide row through `tuneloop sql` on Postgres: a replica's memory while POST /admin/sql
(a reviewer token) answers one value of N characters past the answer cap (16 MiB), built as
`string_agg(repeat('x', 100000), '')` (storage/sql_check_pg.py refuses one `repeat` that large).

    python bench/pg_sql_wide_row.py                  # N = 100M, 400M, 700M characters

For each N it prints the HTTP answer, its time, and the replica's RSS before, at its peak
(sampled every 10 ms) and after. The server measures each row before sending it
(storage/sql.py `row_capped`), so the replica's memory stays flat; before that change the
replica fetched the whole value (400M: 393 → 1,708 MB). A real `tuneloop serve` process
(bench/replicas.py `ReplicaSet`) on a throwaway cluster (tests/pg_cluster.py).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replicas import ReplicaSet  # noqa: E402
from bench.rss import PeakRss, rss_mb  # noqa: E402
from tests.pg_cluster import PgCluster  # noqa: E402

TOKEN = "reviewer-token-abcdefghijklmnop"
SIZES = (100_000_000, 400_000_000, 700_000_000)
WIDE = "SELECT string_agg(repeat('x', 100000), '') FROM generate_series(1, {})"



def measure(url: str, pid: int, size: int) -> str:
    started = time.monotonic()
    with PeakRss(pid) as rss:
        answer = httpx.post(f"{url}/admin/sql", json={"sql": WIDE.format(size // 100_000)},
                            headers={"authorization": f"Bearer {TOKEN}"}, timeout=120)
    took = time.monotonic() - started
    code = answer.json()["error"]["code"] if answer.status_code != 200 else "ok"
    return (f"repeat {size // 1_000_000}M: HTTP {answer.status_code} {code} in {took:.1f} s; "
            f"replica RSS {rss.base} MB -> peak {rss.peak} MB, after {rss_mb(pid)} MB")


def main() -> None:
    cluster = PgCluster.start()
    work = Path(tempfile.mkdtemp(prefix="tuneloop-wide-row-"))
    try:
        url = cluster.create_database()
        with ReplicaSet(url, work, 1, env={"TUNELOOP_REVIEWER_TOKEN": TOKEN}) as group:
            replica = group.replicas[0]
            assert replica.proc is not None
            httpx.post(f"{replica.url}/admin/sql", json={"sql": "SELECT 1"}, timeout=60,
                       headers={"authorization": f"Bearer {TOKEN}"}).raise_for_status()
            for size in SIZES:  # after a first small query (its session's own memory)
                print(measure(replica.url, replica.proc.pid, size), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
