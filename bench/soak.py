"""Soak with faults: concurrent clients against a real `tuneloop serve` while the upstream
misbehaves and storage fails for a while; then count what was lost (must be nothing).

    python bench/soak.py                     # 64 clients, 60 s, storage down 10 s mid-run
    python bench/soak.py --clients 16 --duration 10 --fault-seconds 3

The fake upstream injects, per request: 5xx, 429 with retry-after, a delay past the proxy's
read timeout, a connection reset, and streams cut mid-way. Storage writes fail through the
documented fault switch (POST /admin/faults; TUNELOOP_FAULT_INJECTION=1), since a root
process ignores file modes. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.server import free_port  # noqa: E402

TOKEN = "soak-admin-token"
FAKE_CONTROLS = ["x-fake-fail", "x-fake-delay-ms", "x-fake-cut-after", "x-fake-reset"]
# (weight, kind, extra headers sent to the upstream through the proxy)
MIX: list[tuple[int, str, dict[str, str]]] = [
    (55, "ok", {}),
    (20, "ok-stream", {}),
    (5, "http-500", {"x-fake-fail": "500"}),
    (5, "http-429", {"x-fake-fail": "429"}),
    (4, "timeout", {"x-fake-delay-ms": "3000"}),
    (4, "reset", {"x-fake-reset": "1"}),
    (7, "cut-stream", {"x-fake-cut-after": "2"}),
]


@dataclass
class SoakReport:
    sent: int = 0
    correct: int = 0
    proxy_errors: int = 0
    broken: int = 0
    ids: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    logged: int = 0
    missing: int = 0
    duplicates: int = 0
    peak_rss_mb: float = 0.0
    spool_peak_bytes: int = 0
    spool_end_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def print(self) -> None:
        p50 = statistics.median(self.latencies_ms) if self.latencies_ms else 0.0
        p99 = (statistics.quantiles(self.latencies_ms, n=100)[98]
               if len(self.latencies_ms) > 1 else 0.0)
        rows = [
            ("requests sent", self.sent),
            ("answered correctly (incl. upstream errors passed through)", self.correct),
            ("answered with a proxy error (502/504/cut, OpenAI-shaped)", self.proxy_errors),
            ("broken answers (neither)", self.broken),
            ("requests that got an x-tuneloop-id", len(self.ids)),
            ("interactions logged in DuckDB", self.logged),
            ("with an x-tuneloop-id but not in DuckDB (must be 0)", self.missing),
            ("duplicate ids in DuckDB (must be 0)", self.duplicates),
            ("latency p50 / p99 ms", f"{p50:.1f} / {p99:.1f}"),
            ("proxy peak RSS MB", f"{self.peak_rss_mb:.0f}"),
            ("spool bytes at peak / at the end", f"{self.spool_peak_bytes} / "
                                                 f"{self.spool_end_bytes}"),
        ]
        width = max(len(r[0]) for r in rows)
        for label, value in rows:
            print(f"{label:<{width}}  {value}")
        print("mix:", dict(self.kinds))
        for note in self.notes:
            print("note:", note)


def pick(rng: random.Random) -> tuple[str, dict[str, str]]:
    roll = rng.uniform(0, sum(w for w, _, _ in MIX))
    for weight, kind, headers in MIX:
        if roll < weight:
            return kind, headers
        roll -= weight
    return MIX[0][1], MIX[0][2]


async def one_request(http: httpx.AsyncClient, kind: str, headers: dict[str, str],
                      n: int, report: SoakReport) -> None:
    stream = "stream" in kind
    body = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": f"soak request {n}"}]}
    started = time.perf_counter()
    report.sent += 1
    report.kinds[kind] += 1
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body,
                               headers=headers) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
    except httpx.HTTPError as exc:
        report.broken += 1
        report.notes.append(f"{kind}: {type(exc).__name__}") if len(report.notes) < 5 else None
        return
    report.latencies_ms.append((time.perf_counter() - started) * 1000)
    if "x-tuneloop-id" in response.headers:
        report.ids.add(response.headers["x-tuneloop-id"])
    status = response.status_code
    own_error = b'"code":"upstream_' in raw
    answered = {
        "ok": status == 200 and b"echo: soak request" in raw,
        "ok-stream": status == 200 and raw.endswith(b"data: [DONE]\n\n") and not own_error,
        "http-500": status == 500 and not own_error,
        "http-429": status == 429 and not own_error,
    }
    if answered.get(kind, False):
        report.correct += 1
    elif (kind == "timeout" and status == 504) or (kind == "reset" and status == 502) or \
            (kind == "cut-stream" and own_error):
        report.proxy_errors += 1
    else:
        report.broken += 1
        if len(report.notes) < 5:
            report.notes.append(f"{kind}: HTTP {status} {raw[:160]!r}")


async def drive(url: str, clients: int, duration_s: float, fault_at_s: float,
                fault_seconds: float, report: SoakReport) -> None:
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits,
                                 headers={"authorization": "Bearer sk-soak"}) as http:

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            n = 0
            while time.monotonic() < deadline:
                kind, headers = pick(rng)
                n += 1
                await one_request(http, kind, headers, seed * 1_000_000 + n, report)

        async def fault() -> None:
            await asyncio.sleep(fault_at_s)
            await http.post("/admin/faults", json={"storage_fail_seconds": fault_seconds},
                            headers={"authorization": f"Bearer {TOKEN}"})

        async def watch_spool() -> None:
            while time.monotonic() < deadline:
                health = (await http.get("/healthz")).json()
                report.spool_peak_bytes = max(report.spool_peak_bytes, health["spool_bytes"])
                await asyncio.sleep(0.25)

        await asyncio.gather(fault(), watch_spool(), *(client(i) for i in range(clients)))


def collect(url: str, pid: int, report: SoakReport, drain_timeout_s: float = 120) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + drain_timeout_s
    while time.monotonic() < deadline:
        health = httpx.get(url + "/healthz").json()
        report.spool_peak_bytes = max(report.spool_peak_bytes, health["spool_bytes"])
        if health["spool_bytes"] == 0:
            break
        time.sleep(0.25)
    report.spool_end_bytes = httpx.get(url + "/healthz").json()["spool_bytes"]
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                report.peak_rss_mb = int(line.split()[1]) / 1024
    logged: list[str] = []
    last = ""
    while True:
        rows = httpx.post(url + "/admin/sql", headers=auth, timeout=60, json={
            "sql": f"SELECT id FROM interactions WHERE id > '{last}' ORDER BY id LIMIT 50000",
            "max_rows": 50000}).json()["rows"]
        if not rows:
            break
        logged += [r[0] for r in rows]
        last = rows[-1][0]
    report.logged = len(logged)
    report.duplicates = len(logged) - len(set(logged))
    report.missing = len(report.ids - set(logged))


def run_soak(clients: int, duration_s: float, fault_at_s: float, fault_seconds: float,
             workdir: Path) -> SoakReport:
    up_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": TOKEN, "TUNELOOP_FAULT_INJECTION": "1",
           "TUNELOOP_READ_TIMEOUT_S": "1.0", "TUNELOOP_LOG_LEVEL": "warning",
           # only documented headers go upstream: the fake's fault switches are let through
           "TUNELOOP_FORWARD_HEADERS": orjson.dumps(FAKE_CONTROLS).decode()}
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(up_port),
         "--latency-ms", "20", "--no-record"], cwd=ROOT,
        stdout=(workdir / "upstream.log").open("wb"), stderr=subprocess.STDOUT)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "serve", "--port", str(proxy_port), "--db",
         str(workdir / "soak.duckdb"), "--upstream", f"http://127.0.0.1:{up_port}/v1"],
        cwd=ROOT, env=env, stdout=(workdir / "proxy.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{proxy_port}"
    try:
        for target in (f"http://127.0.0.1:{up_port}/health", url + "/healthz"):
            for _ in range(300):
                try:
                    if httpx.get(target, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        report = SoakReport()
        asyncio.run(drive(url, clients, duration_s, fault_at_s, fault_seconds, report))
        collect(url, proxy.pid, report)
        return report
    finally:
        for proc in (proxy, upstream):
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--fault-at", type=float, default=None,
                        help="seconds into the run (default: a quarter of the way)")
    parser.add_argument("--fault-seconds", type=float, default=10.0)
    args = parser.parse_args()
    fault_at = args.duration / 4 if args.fault_at is None else args.fault_at
    with tempfile.TemporaryDirectory(prefix="tuneloop-soak-") as work:
        report = run_soak(args.clients, args.duration, fault_at, args.fault_seconds, Path(work))
    print(f"\nsoak: {args.clients} clients, {args.duration:g} s, storage failing for "
          f"{args.fault_seconds:g} s from t={fault_at:g} s\n")
    report.print()
    if report.missing or report.duplicates or report.spool_end_bytes:
        sys.exit(1)


if __name__ == "__main__":
    main()
