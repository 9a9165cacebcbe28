"""Replicas sharing one Postgres: real `tuneloop serve` processes on loopback in front of the
fake upstream, concurrent clients spread across them; then count what reached the store.

    python bench/replicas.py                          # 1 and 3 replicas, 64 clients, 10 s each
    python bench/replicas.py --replicas 3 --clients 64 --duration 20 --kill

For each replica count it prints: requests answered (with an x-tuneloop-id), interactions
logged, answered but not logged (must be 0), duplicate ids (must be 0), requests/s, ingest
rows/s (rows in Postgres over the time from the first request until every spool was empty:
the ingest keeps up with the load when this is the request rate and the lag stays small),
the ingest lag the replicas reported at worst, and CPU per request: the replicas' processes
(their index workers included) and the Postgres server's. `--kill` kills one replica with
SIGKILL a third of the way in and restarts it on the same spool a sixth later.

The Postgres is a throwaway cluster (tests/pg_cluster.py: fsync off) unless --url names one
(an empty database; it is migrated). Each run starts with a 3-second warm-up (not counted).
Loopback only, bounded in time. `ReplicaSet` and `drive` are used by
tests/reliability/test_replicas.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.server import free_port  # noqa: E402

TOKEN = "replicas-admin-token-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children that were waited for."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / TICKS  # utime stime cutime cstime
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Replica:
    index: int
    port: int
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    cpu_before_kill: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def cpu(self) -> float:
        return self.cpu_before_kill + cpu_seconds(self.pids())


@dataclass
class ReplicaSet:
    """The fake upstream and `count` replicas of `tuneloop serve` on one Postgres URL."""

    db_url: str
    workdir: Path
    count: int
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    upstream: subprocess.Popen[bytes] | None = None
    upstream_port: int = field(default_factory=free_port)

    def start(self, timeout_s: float = 60.0) -> ReplicaSet:
        self.upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_upstream", "--port",
             str(self.upstream_port), "--no-record"], cwd=ROOT,
            stdout=(self.workdir / "upstream.log").open("wb"), stderr=subprocess.STDOUT)
        self.replicas = [Replica(i, free_port(), self.workdir / f"replica-{i}")
                         for i in range(self.count)]
        for replica in self.replicas:  # all at once: they migrate once between them
            self._spawn(replica)
        self.wait_ready(self.replicas, timeout_s)
        return self

    def _spawn(self, replica: Replica) -> None:
        replica.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": TOKEN, "TUNELOOP_LOG_LEVEL": "warning",
               "TUNELOOP_STATE_DIR": str(replica.state_dir), "PYTHONUNBUFFERED": "1",
               **self.env}
        log = (self.workdir / f"replica-{replica.index}.log").open("ab")
        replica.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneloop.cli", "serve", "--host", "127.0.0.1", "--port",
             str(replica.port), "--db", self.db_url, "--upstream",
             f"http://127.0.0.1:{self.upstream_port}/v1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, replicas: list[Replica], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for target in [f"http://127.0.0.1:{self.upstream_port}/health",
                       *(r.url + "/healthz" for r in replicas)]:
            while True:
                try:
                    if httpx.get(target, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                for replica in replicas:
                    if replica.proc is not None and replica.proc.poll() is not None:
                        raise RuntimeError(f"replica {replica.index} exited:\n"
                                           f"{self.log(replica.index)[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} did not answer")
                time.sleep(0.05)

    def log(self, index: int) -> str:
        path = self.workdir / f"replica-{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, index: int) -> None:
        """SIGKILL: no shutdown hook, nothing drained; its spool stays on disk."""
        replica = self.replicas[index]
        assert replica.proc is not None
        replica.cpu_before_kill = replica.cpu()
        for pid in reversed(replica.pids()):  # the worker process too, as a crash would
            os.kill(pid, signal.SIGKILL)
        replica.proc.wait(10)

    def restart(self, index: int) -> None:
        """Start it again on the same port and state directory (its spool is replayed)."""
        replica = self.replicas[index]
        self._spawn(replica)
        self.wait_ready([replica])

    def cpu(self) -> float:
        return sum(r.cpu() for r in self.replicas)

    def health(self) -> list[dict[str, Any]]:
        return [httpx.get(r.url + "/healthz", timeout=10).json() for r in self.replicas]

    def wait_drained(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while any(h["spool_bytes"] for h in self.health()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"spools not drained: {self.health()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in [*(r.proc for r in self.replicas), self.upstream]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*(r.proc for r in self.replicas), self.upstream]:
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Load:
    answered: set[str] = field(default_factory=set)
    failed: int = 0
    sent: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    worst_lag_s: float = 0.0


async def drive(urls: list[str], clients: int, duration_s: float,
                events: Sequence[tuple[float, Callable[[], Any]]] = (),
                model: str = "gpt-4o-mini") -> Load:
    """`clients` closed-loop clients, client i on replica i mod len(urls), for duration_s;
    `events` are (seconds into the run, a blocking function run in a thread then)."""
    load = Load(first_at=time.time())
    deadline = time.monotonic() + duration_s
    numbers = itertools.count()
    # aiohttp: httpx's pool slows to a crawl at 64 connections in one process
    sessions = [aiohttp.ClientSession(
        base_url=url, timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=0), headers={"authorization": "Bearer sk-replicas"})
        for url in urls]

    async def client(index: int) -> None:
        http = sessions[index % len(sessions)]
        while time.monotonic() < deadline:
            n = next(numbers)
            load.sent += 1
            body = {"model": model, "user": f"user-{n % 50}",
                    "messages": [{"role": "user", "content": f"replica request {n}"}]}
            try:
                async with http.post("/v1/chat/completions", json=body) as response:
                    await response.read()
                    status, headers = response.status, response.headers
            except (aiohttp.ClientError, TimeoutError):  # its replica is down: retry soon
                load.failed += 1
                await asyncio.sleep(0.05)
                continue
            if status == 200 and "x-tuneloop-id" in headers:
                load.answered.add(headers["x-tuneloop-id"])
            else:
                load.failed += 1

    async def at(delay: float, action: Callable[[], Any]) -> None:
        await asyncio.sleep(delay)
        await asyncio.to_thread(action)

    async def watch_lag() -> None:
        while time.monotonic() < deadline:
            for http in sessions:
                try:
                    async with http.get("/healthz") as response:
                        lag = (await response.json())["ingest_lag_seconds"]
                    load.worst_lag_s = max(load.worst_lag_s, lag)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                    pass
            await asyncio.sleep(0.5)

    try:
        await asyncio.gather(watch_lag(), *(at(d, a) for d, a in events),
                             *(client(i) for i in range(clients)))
    finally:
        for http in sessions:
            await http.close()
    load.last_at = time.time()
    return load


def stored_ids(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as con:
        return [row[0] for row in con.execute("SELECT id FROM interactions").fetchall()]


def _stat_times(pid: int) -> tuple[int, int, int, int]:
    """utime, stime, cutime, cstime (clock ticks) of a process; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return (0, 0, 0, 0)
    return (int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14]))


def postmaster_of(db_url: str) -> int:
    """The pid of the server's postmaster: the parent of this connection's backend, read
    while the backend still runs (the server must be on this machine)."""
    with psycopg.connect(db_url) as con:
        row = con.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        stat = Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1])


def postgres_cpu(postmaster: int) -> float:
    """CPU of the whole server since it started, in seconds: the postmaster, its live
    processes, and the ones that have exited (a backend of a closed connection, a replica's
    killed pool): the postmaster reaps each, and the kernel adds its time to the postmaster's
    cutime/cstime. So it only grows, whatever connections come and go between two readings.
    Read again when a process was reaped in between (its time would count twice or not)."""
    for _ in range(10):
        before = _stat_times(postmaster)
        live = cpu_seconds(children(postmaster))  # their own time and their reaped children's
        after = _stat_times(postmaster)
        if before[2:] == after[2:]:
            break
    return sum(after) / TICKS + live


@dataclass
class Figures:
    replicas: int
    answered: int
    logged: int
    missing: int
    duplicates: int
    requests_s: float
    ingest_rows_s: float
    worst_lag_s: float
    proxy_cpu_ms: float
    postgres_cpu_ms: float


def run(db_url: str, workdir: Path, replicas: int, clients: int, duration_s: float,
        kill: bool) -> Figures:
    with ReplicaSet(db_url, workdir, replicas) as group:
        # warm up: the first batch of 200+ rows waits for the index worker process to start
        asyncio.run(drive([r.url for r in group.replicas], 16, 3.0))
        group.wait_drained()
        warm = set(stored_ids(db_url))
        postmaster = postmaster_of(db_url)
        cpu0, pg0 = group.cpu(), postgres_cpu(postmaster)
        events: list[tuple[float, Callable[[], Any]]] = []
        if kill:
            events = [(duration_s / 3, lambda: group.kill(replicas - 1)),
                      (duration_s / 2, lambda: group.restart(replicas - 1))]
        load = asyncio.run(drive([r.url for r in group.replicas], clients, duration_s, events))
        group.wait_drained()
        done = time.time()
        cpu1, pg1 = group.cpu(), postgres_cpu(postmaster)
        every = stored_ids(db_url)
    answered = len(load.answered)
    ids = [i for i in every if i not in warm]
    logged = len(ids)
    return Figures(
        replicas=replicas, answered=answered, logged=logged,
        missing=len(load.answered - set(ids)), duplicates=len(every) - len(set(every)),
        requests_s=answered / (load.last_at - load.first_at),
        ingest_rows_s=logged / (done - load.first_at),
        worst_lag_s=load.worst_lag_s,
        proxy_cpu_ms=1000 * (cpu1 - cpu0) / max(answered, 1),
        postgres_cpu_ms=1000 * (pg1 - pg0) / max(answered, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 3])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--kill", action="store_true", help="kill -9 one replica mid-run")
    parser.add_argument("--url", help="a Postgres URL (empty database) instead of a cluster")
    args = parser.parse_args()

    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="tl-replicas-") as tmp:
        cluster = None
        if args.url is None:
            from tests.pg_cluster import PgCluster
            cluster = PgCluster.start()
        try:
            for count in args.replicas:
                url = args.url or cluster.create_database()  # type: ignore[union-attr]
                work = Path(tmp) / f"r{count}"
                work.mkdir()
                results.append(run(url, work, count, args.clients, args.duration,
                                   args.kill and count > 1))
        finally:
            if cluster is not None:
                cluster.stop()

    print(f"{args.clients} clients, {args.duration:g} s per run, fake upstream on loopback"
          f"{', one replica killed (-9) and restarted mid-run' if args.kill else ''}")
    header = ("replicas", "answered", "logged", "missing", "dupes", "req/s", "ingest rows/s",
              "worst lag s", "proxy CPU ms/req", "pg CPU ms/req")
    print("  ".join(header))
    for f in results:
        values = (f.replicas, f.answered, f.logged, f.missing, f.duplicates,
                  f"{f.requests_s:,.0f}", f"{f.ingest_rows_s:,.0f}", f"{f.worst_lag_s:.2f}",
                  f"{f.proxy_cpu_ms:.2f}", f"{f.postgres_cpu_ms:.2f}")
        print("  ".join(str(v).rjust(len(h)) for v, h in zip(values, header, strict=True)))
    if any(f.missing or f.duplicates for f in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
