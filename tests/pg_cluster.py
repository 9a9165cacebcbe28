"""A throwaway Postgres cluster for one test session: real `initdb` + `pg_ctl`, no mocks.

`PgCluster.start()` initialises a cluster in a fresh temporary directory, starts it on
127.0.0.1 on a free port (and a unix socket inside that directory) and creates the login role
`tuneloop`. Each test then gets its own empty database, owned by `tuneloop`, from
`create_database()` / `database()` (dropped `WITH (FORCE)`, so a pool left open can't keep it).

- Postgres refuses to run as root: as root, every server command runs as the `postgres` user
  (`runuser -u postgres --`) and the temporary directory belongs to that user.
- `tuneloop` is a plain LOGIN role (no SUPERUSER, no CREATEDB, no CREATEROLE), like the role a
  team gives the proxy in production: it owns its test database, so it can create tables and
  trusted extensions (pg_trgm) there, and a permission the product needs but a production role
  lacks shows up as a failing test. Tests that must act as an administrator (create a read-only
  role, look at `pg_database`) use `admin_url()` (the superuser `postgres`).
- Settings are for speed, not durability: fsync, synchronous_commit and full_page_writes off;
  max_connections 300 (three replicas with pools); UTF-8 with the C.UTF-8 locale; TimeZone UTC.
- The cluster is stopped and its directory deleted by `stop()`, at interpreter exit (atexit),
  and by a guard process that waits for the test process to go away in any way, `kill -9`
  included: no postgres process or data directory is left behind.
- A missing Postgres is an error (`PgClusterError` naming what was looked for, or the command
  that failed with its output), never a skip: `.ci/run` installs Debian's `postgresql`.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the guard process runs this file with the standard library only
    import psycopg

ROLE = "tuneloop"
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs the server when the tests run as root
MIN_VERSION = 13  # DROP DATABASE ... WITH (FORCE)
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "dynamic_shared_memory_type": "mmap",  # not /dev/shm (64 MiB in many containers)
}
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PgClusterError(RuntimeError):
    """Postgres is missing, or a command to set up the cluster failed (with its output)."""


def find_bindir(
    globs: Sequence[str] = ("/usr/lib/postgresql/*/bin",), path: str | None = None
) -> Path:
    """The directory with initdb, pg_ctl and postgres: `pg_config --bindir`, then the newest
    of `globs`, then PATH (`path` replaces $PATH). Debian's pg_config (libpq-dev) may name a
    version whose server isn't installed, so each candidate is checked."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config", path=path)
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version(found: str) -> tuple[int, ...]:
        return tuple(int(d) for d in re.findall(r"\d+", Path(found).parent.name))

    for pattern in globs:
        candidates += [Path(p) for p in sorted(glob.glob(pattern), key=version, reverse=True)]
    initdb = shutil.which("initdb", path=path)
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates)) or "none found"
    raise PgClusterError(
        "Postgres server binaries (initdb, pg_ctl, postgres) not found; looked in "
        f"`pg_config --bindir`, {', '.join(globs)} and PATH (candidates: {looked}). Install "
        "Debian's `postgresql` package (`apt-get install postgresql`; `.ci/run` does it)."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> list[str]:
    """The command prefix that runs a server command as a user Postgres accepts."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PgClusterError("running as root and `runuser` is missing (util-linux): Postgres "
                             "refuses to run as root, so it must run as the postgres user")
    return [runuser, "-u", OS_USER, "--"]


def _run(command: Sequence[str], *, timeout_s: float = 120.0) -> str:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s,
                              start_new_session=True, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PgClusterError(f"`{' '.join(command)}` failed: {exc}") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise PgClusterError(
            f"`{' '.join(command)}` exited with {done.returncode}:\n{output or '(no output)'}"
        )
    return output


def _server_version(bindir: Path) -> int:
    out = _run([str(bindir / "postgres"), "--version"])
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match is None:
        raise PgClusterError(f"can't read the version in {out!r}")
    return int(match.group(1))


def _make_root(prefix: str) -> Path:
    # a unix socket path must fit in 107 bytes: keep the directory short
    base = tempfile.gettempdir()
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base if len(base) < 60 else "/tmp"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise PgClusterError(
                f"running as root and there is no `{OS_USER}` user to run Postgres as "
                "(Debian's postgresql package creates it)") from exc
        os.chown(root, user.pw_uid, user.pw_gid)
    return root


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _stop_by_signal(data: Path, timeout_s: float = 15.0) -> None:
    """Immediate shutdown of the postmaster named in data/postmaster.pid (SIGQUIT, then
    SIGKILL): works for any user allowed to signal it, needs no pg_ctl."""
    pid = _postmaster_pid(data)
    if pid is None:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # already gone
    if b"postgres" not in cmdline:
        return  # the pid was reused by something else
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _guard(root: Path) -> None:
    """Runs in its own process: wait until the test process closes our stdin (it exited,
    however it exited), then stop the cluster if it still runs and delete its directory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(65536):
        pass
    _stop_by_signal(root / "data")
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class PgCluster:
    """A running throwaway cluster; `stop()` ends it and deletes its directory."""

    root: Path
    bindir: Path
    port: int
    version: int
    host: str = "127.0.0.1"
    _guard: subprocess.Popen[bytes] | None = None
    _admin: psycopg.Connection[tuple[object, ...]] | None = None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str, user: str = ROLE) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def admin_url(self, dbname: str = "postgres") -> str:
        """The superuser's URL: for tests that create roles or inspect the cluster."""
        return self.url(dbname, SUPERUSER)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    # -- databases ---------------------------------------------------------------------------

    def _execute(self, sql: str) -> None:
        import psycopg

        with self._lock:
            if self._admin is None or self._admin.closed or self._admin.broken:
                self._admin = psycopg.connect(self.admin_url(), autocommit=True)
            self._admin.execute(sql.encode())

    def create_database(self) -> str:
        """A new empty database owned by `tuneloop` (from template0); returns its URL."""
        name = f"test_{next(self._names)}_{secrets.token_hex(4)}"
        self._execute(f'CREATE DATABASE "{name}" OWNER "{ROLE}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url_or_name: str) -> None:
        """Drop it, ending any connection still open to it; no error if it is gone."""
        name = url_or_name.rsplit("/", 1)[-1].split("?", 1)[0]
        if not _DB_NAME.match(name):
            raise ValueError(f"not a test database name: {name!r}")
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self) -> Iterator[str]:
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    # -- life cycle --------------------------------------------------------------------------

    @classmethod
    def start(cls, settings: Mapping[str, str] | None = None, attempts: int = 5) -> PgCluster:
        """initdb + start on a free port. `settings` adds or overrides postgresql.conf lines
        (values as Postgres spells them, strings quoted)."""
        bindir = find_bindir()
        version = _server_version(bindir)
        if version < MIN_VERSION:
            raise PgClusterError(f"Postgres {version} in {bindir}: the tests need {MIN_VERSION}+")
        root = _make_root("tuneloop-pg-")
        guard = subprocess.Popen([sys.executable, "-I", __file__, "--guard", str(root)],
                                 stdin=subprocess.PIPE, start_new_session=True, cwd="/")
        cluster = cls(root, bindir, 0, version, _guard=guard)
        atexit.register(cluster.stop)
        try:
            cluster._initdb(settings or {})
            for attempt in range(attempts):
                cluster.port = _free_port()
                try:
                    cluster._pg_ctl_start()
                    break
                except PgClusterError:
                    # another process took the port between the probe and the bind: retry
                    if "already in use" not in cluster.log_tail() or attempt == attempts - 1:
                        raise
            cluster._execute(f'CREATE ROLE "{ROLE}" LOGIN')
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _initdb(self, settings: Mapping[str, str]) -> None:
        prefix = _as_server_user()
        _run([*prefix, str(self.bindir / "initdb"), "-D", str(self.data_dir), "--no-sync",
              "--auth=trust", f"--username={SUPERUSER}", "--encoding=UTF8", "--locale=C.UTF-8"])
        _run([*prefix, "mkdir", "-m", "0700", str(self.socket_dir)])
        lines = {**SERVER_SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'", **settings}
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tuneloop test cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in lines.items())

    def _pg_ctl_start(self) -> None:
        prefix = _as_server_user()
        try:
            _run([*prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l",
                  str(self.log_file), "-o", f"-p {self.port}", "-w", "-t", "60", "-s", "start"])
        except PgClusterError as exc:
            raise PgClusterError(f"{exc}\nserver log:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Stop the server (fast shutdown, then immediate) and delete the directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        with self._lock:
            if self._admin is not None:
                self._admin.close()
        try:
            if _postmaster_pid(self.data_dir) is not None:
                try:
                    _run([*_as_server_user(), str(self.bindir / "pg_ctl"), "-D",
                          str(self.data_dir), "-m", "fast", "-w", "-t", "30", "-s", "stop"],
                         timeout_s=40)
                except PgClusterError:
                    _stop_by_signal(self.data_dir)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._guard is not None:
                if self._guard.stdin is not None:
                    self._guard.stdin.close()
                self._guard.wait(30)


if __name__ == "__main__" and sys.argv[1:2] == ["--guard"]:
    _guard(Path(sys.argv[2]))
