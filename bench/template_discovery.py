"""What one template discovery costs a running proxy: peak memory, and the latency of requests
served while it runs.

Seeds a DuckDB file with `--rows` production chat requests of about `--kb` KB each (a shared
system prompt and a long varying user message), starts `tuneloop serve` on it in front of the
fake upstream, then asks `GET /admin/template-candidates?limit=--limit` while a client sends
chat completions one after another. Prints the peak RSS of the server and its child processes
(sampled every 10 ms from /proc), the discovery's wall time, and the concurrent requests'
latency (p50 / p99 / max) before and during the discovery. Run from the repository root:

    python bench/template_discovery.py                       # 5,000 requests of 100 KB
    python bench/template_discovery.py --root /tmp/old-tree  # the same against another checkout
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.records import INTERACTION_SCHEMA, insert_interactions  # noqa: E402
from storage.store import migrate_store, open_store  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"
SYSTEM = "You are Acme's support agent. " * 60
CHUNK = 250


def seed(path: Path, rows: int, kb: int) -> None:
    db = open_store(path)
    migrate_store(db)
    con = db.detached_cursor()
    start = datetime.now(UTC) - timedelta(days=1)
    words = [f"w{i}" for i in range(997)]
    for first in range(0, rows, CHUNK):
        n = min(CHUNK, rows - first)
        bodies = []
        for i in range(first, first + n):
            text = " ".join(words[(i * 7 + j) % 997] for j in range(kb * 1024 // 5))
            bodies.append(orjson.dumps({"model": "support-bot", "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Customer says:\n{i} {text}\nAnswer briefly."}],
            }).decode())
        table = pa.table({
            "id": [f"0190-{i:012d}" for i in range(first, first + n)],
            "created_at": pa.array([start + timedelta(seconds=i) for i in range(first, first + n)],
                                   pa.timestamp("us", tz="UTC")),
            "endpoint": ["chat.completions"] * n, "model": ["support-bot"] * n,
            "upstream_model": ["gpt-4o-mini"] * n, "traffic": ["production"] * n,
            "request": bodies, "status_code": pa.array([200] * n, pa.int32()),
            "finish": ["completed"] * n, "stream": [False] * n,
        })
        for field in INTERACTION_SCHEMA:
            if field.name not in table.column_names:
                table = table.append_column(field, pa.nulls(n, field.type))
        insert_interactions(con, table.select(INTERACTION_SCHEMA.names).cast(INTERACTION_SCHEMA))
    con.close()
    db.close()


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and its children (one level: the worker processes)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url, timeout=60,
                      headers={"authorization": "Bearer sk-bench"}) as client:
        while not stop.is_set():
            began = time.perf_counter()
            client.post("/v1/chat/completions", json=body).raise_for_status()
            out.append(time.perf_counter() - began)


def figures(label: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return f"{label}: no requests"
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (f"{label}: {len(ms)} requests, p50 {statistics.median(ms):.1f} ms, "
            f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--kb", type=int, default=100)
    parser.add_argument("--limit", type=int, default=5000)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve from")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        seed(work / "bench.duckdb", args.rows, args.kb)
        print(f"seeded {args.rows} requests of ~{args.kb} KB in "
              f"{time.perf_counter() - began:.1f} s")
        env = {**os.environ, "PYTHONPATH": str(args.root), "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
               "TUNELOOP_LOG_LEVEL": "warning"}
        up_port, port = free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(up_port),
             "--no-record"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        server = subprocess.Popen(
            [sys.executable, "-m", "tuneloop.cli", "serve", "--port", str(port), "--db",
             str(work / "bench.duckdb"), "--upstream", f"http://127.0.0.1:{up_port}/v1"],
            cwd=work, env=env, stdout=(work / "serve.log").open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{up_port}/health", upstream)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url + "/healthz", server)
            time.sleep(2)  # the ingest worker process starts
            idle_rss = tree_rss_kb(server.pid)
            quiet: list[float] = []
            stop = threading.Event()
            client = threading.Thread(target=latencies, args=(url, stop, quiet))
            client.start()
            time.sleep(3)
            stop.set()
            client.join()

            peak = [idle_rss]
            during: list[float] = []
            done = threading.Event()

            def sample_rss() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], tree_rss_kb(server.pid))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample_rss)
            sampler.start()
            stop = threading.Event()
            client = threading.Thread(target=latencies, args=(url, stop, during))
            client.start()
            began = time.perf_counter()
            answer = httpx.get(f"{url}/admin/template-candidates",
                               params={"alias": "support-bot", "limit": args.limit},
                               headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=600)
            took = time.perf_counter() - began
            stop.set()
            client.join()
            done.set()
            sampler.join()
            found = answer.json()
            print(f"discovery: HTTP {answer.status_code} in {took:.2f} s, sample "
                  f"{found.get('sample')}, read {found.get('read')}")
            print(f"server RSS (with children): idle {idle_rss / 1024:.0f} MB, peak "
                  f"{peak[0] / 1024:.0f} MB")
            print(figures("chat completions before", quiet))
            print(figures("chat completions during discovery", during))
        finally:
            for proc in (server, upstream):
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
