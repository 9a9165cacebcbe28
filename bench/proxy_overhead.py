"""What the proxy costs: direct-to-upstream vs through tuneloop vs through LiteLLM's proxy.

A fake upstream answers chat completions after a fixed latency (50 ms by default); Debian's
`wrk` drives closed-loop clients at each concurrency against each target in the same run, and
the script prints requests/s, p50/p99 latency, the overhead of each proxy over direct, how many
requests reached DuckDB, and the added time-to-first-byte of a stream. Loopback only, bounded
in time. Run from the repository root:

    python bench/proxy_overhead.py                      # all targets, 1/16/64/256 clients
    python bench/proxy_overhead.py --skip-litellm --duration 5

LiteLLM's proxy needs `pip install 'litellm[proxy]'`; offline it starts only with
LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true and LITELLM_LOCAL_MODEL_COST_MAP=True
(set here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.server import free_port  # noqa: E402

BODY = ('{"model":"gpt-4o-mini","messages":[{"role":"user","content":'
        '"Summarise the refund policy for a customer in two sentences."}]}')
ADMIN_TOKEN = "bench-admin-token"


@dataclass
class Result:
    target: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=handle,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def to_ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(value)
    number, unit = float(match.group(1)), match.group(2)
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(url: str, concurrency: int, duration_s: float, script: Path) -> Result:
    threads = 1 if concurrency < 2 else 2
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration_s:g}s",
         "--latency", "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return Result("", concurrency, requests, errors, rps, p50, p99)


async def stream_ttfb(base_urls: list[str], count: int) -> list[list[float]]:
    """Time to first byte of streamed chat completions, one request at a time, the targets
    taking turns."""
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": "stream a short answer"}]}
    samples: list[list[float]] = [[] for _ in base_urls]
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(count):
            for base_url, target_samples in zip(base_urls, samples, strict=True):
                started = time.perf_counter()
                async with client.stream("POST", base_url + "/chat/completions", json=body,
                                         headers={"authorization": "Bearer sk-bench"}) as resp:
                    first = True
                    async for _chunk in resp.aiter_raw():
                        if first:
                            target_samples.append((time.perf_counter() - started) * 1000)
                            first = False
    return samples


def litellm_config(path: Path, upstream: str) -> None:
    path.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
    )


def wait_drained(api: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(api + "/healthz", timeout=5).json()["spool_bytes"] == 0:
            return
        time.sleep(0.2)


def answered(api: str) -> int:
    """Chat requests the proxy answered, from its own /metrics (wrk does not count requests
    still in flight when a run ends, but the proxy answered and logged them)."""
    total = 0.0
    for line in httpx.get(api + "/metrics", timeout=10).text.splitlines():
        if line.startswith('tuneloop_requests_total{endpoint="chat.completions"'):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def count_rows(api: str) -> int:
    response = httpx.post(api + "/admin/sql", json={"sql": "SELECT count(*) FROM interactions"},
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    response.raise_for_status()
    return int(response.json()["rows"][0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--ttfb-samples", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per target and level, interleaved; the report shows medians")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Authorization"] = "Bearer sk-bench"\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        procs.append(start([sys.executable, "-m", "tests.fakes.openai_upstream", "--port",
                            str(up_port), "--latency-ms", str(args.latency_ms), "--no-record"],
                           {}, work / "upstream.log"))
        wait_healthy(f"http://127.0.0.1:{up_port}/health", procs[-1])

        tl_port = free_port()
        tuneloop = f"http://127.0.0.1:{tl_port}"
        procs.append(start([sys.executable, "-m", "tuneloop.cli", "serve", "--port",
                            str(tl_port), "--db", str(work / "bench.duckdb"), "--upstream",
                            upstream], {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
                                        "TUNELOOP_LOG_LEVEL": "warning"},
                           work / "tuneloop.log"))
        wait_healthy(tuneloop + "/healthz", procs[-1])
        targets = {"direct": upstream, "tuneloop": tuneloop + "/v1"}

        if not args.skip_litellm:
            ll_port = free_port()
            litellm_config(work / "litellm.yaml", upstream)
            env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                   "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
            litellm_bin = Path(sys.executable).with_name("litellm")
            procs.append(start([str(litellm_bin), "--config", str(work / "litellm.yaml"),
                                "--host", "127.0.0.1", "--port", str(ll_port)], env,
                               work / "litellm.log"))
            wait_healthy(f"http://127.0.0.1:{ll_port}/health/liveliness", procs[-1], 180)
            targets["litellm"] = f"http://127.0.0.1:{ll_port}/v1"

        pids = {"direct": procs[0].pid, "tuneloop": procs[1].pid}
        if len(procs) > 2:
            pids["litellm"] = procs[2].pid
        for base in targets.values():
            run_wrk(base + "/chat/completions", 16, 2, script)  # warm-up
        # Interleaved: each level runs every target in turn, `--repeat` times, so a slow
        # minute on a shared machine hits all targets alike; the report takes medians.
        results: list[Result] = []
        for level in levels:
            for _ in range(args.repeat):
                for name, base in targets.items():
                    before = cpu_seconds(pids[name])
                    result = run_wrk(base + "/chat/completions", level, args.duration, script)
                    result.cpu_us_per_request = (cpu_seconds(pids[name]) - before) * 1e6 / max(
                        result.requests, 1)
                    result.target = name
                    results.append(result)
                    print(f"  {name:9} c={level:<4} {result.rps:8.0f} req/s  p50 "
                          f"{result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors "
                          f"{result.errors}  cpu {result.cpu_us_per_request:.0f} us/req",
                          flush=True)

        wait_drained(tuneloop)
        logged = count_rows(tuneloop)
        tuneloop_requests = answered(tuneloop)
        direct_ttfb, proxied_ttfb = asyncio.run(
            stream_ttfb([upstream, tuneloop + "/v1"], args.ttfb_samples))
        report(results, levels, logged, tuneloop_requests, direct_ttfb, proxied_ttfb,
               args.latency_ms)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def median_result(key: tuple[str, int], runs: list[Result]) -> Result:
    """Each figure's median over the runs (with one run, that run)."""
    cpu = [r.cpu_us_per_request for r in runs if r.cpu_us_per_request is not None]
    return Result(key[0], key[1], int(statistics.median(r.requests for r in runs)),
                  sum(r.errors for r in runs), statistics.median(r.rps for r in runs),
                  statistics.median(r.p50_ms for r in runs),
                  statistics.median(r.p99_ms for r in runs),
                  statistics.median(cpu) if cpu else None)


def report(results: list[Result], levels: list[int], logged: int, sent: int,
           direct_ttfb: list[float], proxied_ttfb: list[float], latency_ms: float) -> None:
    by = {key: median_result(key, [r for r in results if (r.target, r.concurrency) == key])
          for key in {(r.target, r.concurrency) for r in results}}
    repeats = len(results) // max(len(by), 1)
    print(f"\nupstream latency {latency_ms:g} ms; closed-loop wrk clients; 2 cores shared by "
          f"upstream, proxy and load generator; median of {repeats} interleaved run(s)\n")
    header = (f"{'target':10}{'conc':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'+p50 ms':>9}{'+p99 ms':>9}{'% direct':>10}{'cpu us/req':>12}")
    print(header)
    print("-" * len(header))
    for target in ("direct", "tuneloop", "litellm"):
        for level in levels:
            result = by.get((target, level))
            if result is None:
                continue
            base = by[("direct", level)]
            print(f"{target:10}{level:>6}{result.rps:>9.0f}{result.p50_ms:>9.2f}"
                  f"{result.p99_ms:>9.2f}{result.p50_ms - base.p50_ms:>9.2f}"
                  f"{result.p99_ms - base.p99_ms:>9.2f}{100 * result.rps / base.rps:>9.0f}%"
                  f"{result.cpu_us_per_request or 0:>12.0f}")
    if ("litellm", max(levels)) in by:
        top = max(levels)
        ceiling = max(r.rps for key, r in by.items() if key[0] == "litellm")
        print(f"\ntuneloop at c={top} vs LiteLLM proxy's best: "
              f"{by[('tuneloop', top)].rps / ceiling:.1f}x")
    if repeats > 1:
        print("\nper run, tuneloop minus the direct run beside it (+p50 / +p99 ms, % direct):")
        for level in levels:
            pairs = zip([r for r in results if (r.target, r.concurrency) == ("direct", level)],
                        [r for r in results if (r.target, r.concurrency) == ("tuneloop", level)],
                        strict=True)
            print(f"  c={level:<4} " + "; ".join(
                f"{t.p50_ms - d.p50_ms:+.1f} / {t.p99_ms - d.p99_ms:+.1f}, "
                f"{100 * t.rps / d.rps:.0f}%" for d, t in pairs))
    print(f"\nrows in DuckDB: {logged} of {sent} requests tuneloop answered "
          f"({'all logged' if logged == sent else f'{sent - logged} missing'})")
    d50, p50 = statistics.median(direct_ttfb), statistics.median(proxied_ttfb)
    d99 = statistics.quantiles(direct_ttfb, n=100)[98]
    p99 = statistics.quantiles(proxied_ttfb, n=100)[98]
    print(f"stream time to first byte (c=1, {len(direct_ttfb)} requests): direct p50 "
          f"{d50:.2f} ms p99 {d99:.2f} ms; tuneloop p50 {p50:.2f} ms p99 {p99:.2f} ms; "
          f"added p50 {p50 - d50:.2f} ms, p99 {p99 - d99:.2f} ms")


if __name__ == "__main__":
    main()
