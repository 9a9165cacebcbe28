"""Benchmark: stream N approved examples out of a real proxy (GET /admin/datasets/examples) and
record a snapshot of N lineage items back (POST /admin/datasets); print rows/s and the peak
memory of both sides.

    PYTHONPATH=$PWD python bench/dataset_stream.py [--rows 1000000] [--db PATH] [--export]

Seeding writes N chat interactions (system, user, answer; 10% with a reviewer's edit) and
their approved reviews straight into a DuckDB file through Arrow, then `tuneloop serve` owns
it as a subprocess. Memory: the client's peak RSS (this process) and the server's (VmHWM),
each beside its RSS before the transfer, so growth with N shows. With `--export`, the full
`build_dataset` (format, validation with exact token counts, split, files, snapshot) runs on
the same stream afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.db import connect
from storage.migrations import migrate
from storage.records import INTERACTION_SCHEMA, insert_interactions
from storage.review import REVIEWS_SCHEMA, REVISIONS_SCHEMA
from tuneloop.client import AdminClient

TOKEN = "tla-bench-token-0123456789"
CHUNK = 100_000
SYSTEM = "You are the support assistant of Acme. Be concise and friendly."


def seed(db: Path, rows: int) -> None:
    con = connect(db)
    migrate(con)
    base = 1_750_000_000_000
    for start in range(0, rows, CHUNK):
        n = min(rows, start + CHUNK) - start
        ids = [f"{(base + start + k) >> 16:08x}-{(base + start + k) & 0xFFFF:04x}-7000-8000-"
               f"{start + k:012x}" for k in range(n)]
        created = pa.array([(base + start + k) * 1000 for k in range(n)],
                           pa.timestamp("us", tz="UTC"))
        requests = [orjson.dumps({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Where is my order {start + k}? It was due on "
                                        f"day {k % 28 + 1} and has not arrived yet."}]}).decode()
            for k in range(n)]
        responses = [orjson.dumps({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": f"Order {start + k} left our warehouse and "
                                            "should arrive within two days."}}]}).decode()
            for k in range(n)]
        columns = {name: pa.nulls(n, field.type) for name, field in
                   zip(INTERACTION_SCHEMA.names, INTERACTION_SCHEMA, strict=True)}
        columns.update({"id": pa.array(ids), "created_at": created,
                        "endpoint": pa.array(["chat.completions"] * n),
                        "model": pa.array(["gpt-4o-mini"] * n),
                        "traffic": pa.array(["production"] * n),
                        "request": pa.array(requests), "response": pa.array(responses),
                        "status_code": pa.array([200] * n, pa.int32()),
                        "session_id": pa.array([f"s{(start + k) // 3}" for k in range(n)])})
        insert_interactions(con, pa.table(columns, schema=INTERACTION_SCHEMA))
        edited = [orjson.dumps([{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": f"Where is order {start + k}?"},
                                {"role": "assistant", "content": "Reviewed answer."}]).decode()
                  if k % 10 == 0 else None for k in range(n)]
        now = pa.array([time.time_ns() // 1000] * n, pa.timestamp("us", tz="UTC"))
        for table, schema, extra in (
            ("reviews", REVIEWS_SCHEMA, {"updated_at": now, "interaction_created_at": created,
                                         "model": pa.array(["gpt-4o-mini"] * n)}),
            ("review_revisions", REVISIONS_SCHEMA, {"created_at": now,
                                                    "action": pa.array(["approve"] * n),
                                                    "role": pa.array(["reviewer"] * n)}),
        ):
            cols = {name: pa.nulls(n, f.type) for name, f in zip(schema.names, schema,
                                                                  strict=True)}
            cols.update({"interaction_id": pa.array(ids), "state": pa.array(["approved"] * n),
                         "revision": pa.array([1] * n, pa.int32()),
                         "messages": pa.array(edited, pa.string()),
                         "reviewer": pa.array(["bench"] * n), **extra})
            con.register("_rows", pa.table(cols, schema=schema))
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
            con.unregister("_rows")
    con.close()


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return 0


def reset_peak() -> None:
    """Start this process's VmHWM afresh (seeding in this process must not count)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("(could not reset the peak RSS: the client peak includes seeding)")


def serve(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop.cli", "serve", "--db", str(db),
                             "--port", str(port), "--upstream", "http://127.0.0.1:9"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the proxy did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--port", type=int, default=4790)
    parser.add_argument("--export", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    db = args.db or work / "bench.duckdb"
    if not db.exists():
        started = time.perf_counter()
        seed(db, args.rows)
        print(f"seeded {args.rows:,} approved interactions in "
              f"{time.perf_counter() - started:.1f} s")
    proc = serve(db, args.port)
    try:
        client = AdminClient(f"http://127.0.0.1:{args.port}", TOKEN, timeout_s=600)
        reset_peak()
        server_before, client_before = vm(proc.pid, "VmRSS"), vm(os.getpid(), "VmRSS")
        lineage = work / "lineage.jsonl"
        started = time.perf_counter()
        count = 0
        with lineage.open("wb") as sink:
            for example in client.dataset_examples({"review": "approved"}):
                count += 1
                sink.write(orjson.dumps({
                    "interaction_id": example["interaction_id"],
                    "revision_id": example["revision_id"], "revision": example["revision"],
                    "split": "train", "line": count, "skipped": None}) + b"\n")
        seconds = time.perf_counter() - started
        print(f"stream: {count:,} examples in {seconds:.1f} s = {count / seconds:,.0f} rows/s")
        started = time.perf_counter()
        with lineage.open("rb") as source:
            snapshot = client.record_dataset(
                {"name": "bench", "format": "chat", "filter": {}, "manifest": {}},
                iter(lambda: source.read(1 << 20), b""))
        seconds = time.perf_counter() - started
        print(f"record: {snapshot['counts']['train']:,} lineage items in {seconds:.1f} s = "
              f"{count / seconds:,.0f} rows/s")
        if args.export:
            from exporter.datasets import build_dataset
            from exporter.pipeline import ExportOptions

            started = time.perf_counter()
            result = build_dataset(client, work / "export", ExportOptions(name="bench"))
            seconds = time.perf_counter() - started
            print(f"build_dataset: {result.manifest['counts']['examples']:,} examples in "
                  f"{seconds:.1f} s = {count / seconds:,.0f} rows/s")
        client_peak = vm(os.getpid(), "VmHWM")
        print(f"server RSS {server_before} MiB before, peak {vm(proc.pid, 'VmHWM')} MiB; "
              f"client RSS {client_before} MiB before, peak {client_peak} MiB")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
