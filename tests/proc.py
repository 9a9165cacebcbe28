"""`tuneloop serve` as a real subprocess, for tests that kill it or read its log output."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.server import free_port


def served_store(store: str, tmp_path: Path, name: str) -> tuple[Path | str, Path | None]:
    """The `db` and `state_dir` of a served process on the test's `store`: a DuckDB file
    `name` in tmp_path (its files beside it), or the Postgres URL with a state folder."""
    if store.startswith(("postgresql://", "postgres://")):
        return store, tmp_path / f"{name}-state"
    return tmp_path / name, None


def spool_dir(db: Path | str, state_dir: Path | None) -> Path:
    """Where `tuneloop serve` keeps its spool (Settings.spool_path's default)."""
    return state_dir / "tuneloop.spool" if state_dir else Path(f"{db}.spool")


@dataclass
class ProxyProcess:
    db: Path | str  # a DuckDB file, or a Postgres URL (then give `state_dir`)
    upstream: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    # the process's local files (spool, secrets) with a Postgres URL; default beside `db`
    state_dir: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ProxyProcess:
        """Start `tuneloop serve` and wait for its /healthz. The port was free a moment ago
        (free_port): when another test's server took it meanwhile, that server must not pass
        for this proxy (its answers are not our health's shape), and the proxy, unable to
        bind, is started again on another port."""
        if isinstance(self.db, str) and self.state_dir is None:
            raise ValueError("a proxy on a Postgres URL needs a state_dir (not the cwd)")
        self.log_path = self.log_path or (self.state_dir / "serve.log" if self.state_dir
                                          else Path(self.db).with_suffix(".log"))
        for _ in range(PORT_TRIES):
            if self._started(timeout_s):
                return self
            self.port = free_port()  # the port was taken before the proxy could bind it
        raise RuntimeError(f"proxy could not bind a port: {self.log_text()[-2000:]}")

    def _started(self, timeout_s: float) -> bool:
        """True once this proxy says it listens on its port and answers its health; False
        when its port was taken (nothing else is ever asked: polling a port another test's
        server holds would show that server requests it never expected)."""
        assert self.log_path is not None
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            env["TUNELOOP_STATE_DIR"] = str(self.state_dir)
        since = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tuneloop.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--db", str(self.db), "--upstream", self.upstream],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        listening = f"running on http://127.0.0.1:{self.port} "
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            said = self._log_since(since)
            if "address already in use" in said:
                self._end()
                return False
            if self._proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.log_text()[-2000:]}")
            if listening in said:
                try:
                    answer = httpx.get(self.url + "/healthz", timeout=1)
                    if answer.status_code == 200 and _is_our_health(answer):
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"proxy did not start: {self.log_text()[-2000:]}")

    def _log_since(self, offset: int) -> str:
        assert self.log_path is not None
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").lower()

    def _end(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is drained."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(10)

    def stop(self) -> int:
        """SIGTERM: graceful shutdown, the spool is drained."""
        if self._proc is None or self._proc.poll() is not None:
            return self._proc.returncode if self._proc else 0
        self._proc.send_signal(signal.SIGTERM)
        return self._proc.wait(60)

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """The process stopped (SIGSTOP) until the block ends (SIGCONT): its event loop runs
        nothing meanwhile, as one that lags under load, while the kernel still takes what
        clients send. On resuming, whatever timers came due meet those bytes unread."""
        assert self._proc is not None
        pid = self._proc.pid
        # stopped while its loop waits for events (not while it runs a callback, when it would
        # look for events again before it runs due timers), and every thread stopped before
        # the caller sends: woken by the signal alone, epoll_wait returns EINTR and uvloop
        # runs the timers that came due meanwhile before it looks again
        waiting = Path(f"/proc/{pid}/task/{pid}/wchan")
        while waiting.read_text() != "do_epoll_wait":
            time.sleep(0.0005)
        self._proc.send_signal(signal.SIGSTOP)
        try:
            while not _all_stopped(pid):
                time.sleep(0.001)
            yield
        finally:
            self._proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        finally:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(10)


PORT_TRIES = 5


def _all_stopped(pid: int) -> bool:
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            # the state follows the name in parentheses, which may hold spaces
            if (task / "stat").read_text().rpartition(")")[2].split()[0] != "T":
                return False
    return True


def _is_our_health(answer: httpx.Response) -> bool:
    """The proxy's /healthz (proxy/app.py), not whatever else listens on the port."""
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") in ("ok", "degraded") \
        and "spool_bytes" in body
