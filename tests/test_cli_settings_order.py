"""A command's own settings flags are in the settings before they are checked (review r12w
HIGH 1): `tuneloop serve --db postgresql://...` with `TUNELOOP_SQL_DB` set and `TUNELOOP_DB`
unset, as docker-compose.yml's replicas run, was refused ("sql_db ... needs a postgresql://
db") because the group checked the default DuckDB path first. Real CLI in a subprocess; the
compose file's own command lines and environments, run on a throwaway Postgres."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from tests.fakes.server import free_port
from tests.pg_cluster import PgCluster
from tests.test_pg_compose_roles import initialised  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
CLOSED = "postgresql://tuneloop@127.0.0.1:1/tuneloop"  # nothing listens on port 1
REFUSED = "invalid settings"


def _env(**values: str) -> dict[str, str]:
    """This process's environment without any tuneloop setting, plus `values`."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TUNELOOP_", "PG")) and k != "OPENAI_API_KEY"}
    return {**base, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **values}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tuneloop", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_serve_db_flag_counts_for_the_sql_db_check(tmp_path: Path) -> None:
    """The review's repro: past the settings check, serve tries the store it was given."""
    env = _env(TUNELOOP_ADMIN_TOKEN="x" * 32, PGPASSWORD="pw",
               TUNELOOP_SQL_DB="postgresql://tuneloop_sql@127.0.0.1:1/tuneloop",
               TUNELOOP_STATE_DIR=str(tmp_path / "state"))
    done = _run(["serve", "--port", str(free_port()), "--db", CLOSED], env, tmp_path)
    said = " ".join((done.stdout + done.stderr).split())
    assert REFUSED not in said, said
    assert "cannot connect to postgresql://tuneloop@127.0.0.1:1/tuneloop" in said, said


def test_serve_config_file_counts_for_the_metrics_check(tmp_path: Path) -> None:
    """Another check across fields: metrics_token (env) needs metrics_auth = "token", which
    the file given to serve's own --config sets."""
    config = tmp_path / "serve.toml"
    config.write_text('metrics_auth = "token"\n')
    env = _env(TUNELOOP_ADMIN_TOKEN="x" * 32, TUNELOOP_METRICS_TOKEN="m" * 32,
               TUNELOOP_STATE_DIR=str(tmp_path / "state"))
    done = _run(["serve", "--config", str(config), "--port", str(free_port()), "--db", CLOSED],
                env, tmp_path)
    said = " ".join((done.stdout + done.stderr).split())
    assert REFUSED not in said and "cannot connect to" in said, said
    # the group's own check still runs for the other commands, with the group's flags
    refused = _run(["--config", str(tmp_path / "none.toml"), "sql", "select 1"], env, tmp_path)
    assert refused.returncode == 2 and "config file not found" in refused.stderr


# -- docker-compose.yml's services, as Compose would run them ---------------------------------

_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([-?])([^}]*))?\}")


def _interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}` with `given` as the
    shell's environment."""
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if given.get(name):
            return given[name]
        assert kind != "?", f"compose needs {name}: {rest}"
        return rest if kind == "-" else ""
    return _VAR.sub(one, value)


@pytest.fixture
def compose_pg(initialised: tuple[str, str], pg_cluster: PgCluster  # noqa: F811
               ) -> Iterator[dict[str, str]]:
    """The compose URLs' parts (role, host, database) mapped to the throwaway cluster's
    database made by deploy/postgres-init.sh."""
    store, reader = (urlsplit(url) for url in initialised)
    yield {"tuneloop": str(store.username), "tuneloop_sql": str(reader.username),
           "netloc": f"{pg_cluster.host}:{pg_cluster.port}", "db": store.path}


def _local(value: str, pg: dict[str, str], tmp: Path) -> str:
    """A value of a compose service on this machine: `postgres` is the cluster, volumes are
    folders in tmp, the service's port is a free one on loopback."""
    if value.startswith("postgresql://"):
        url = urlsplit(value)
        assert url.hostname == "postgres" and url.path == "/tuneloop", value
        return urlunsplit((url.scheme, f"{pg[str(url.username)]}@{pg['netloc']}", pg["db"],
                           "", ""))
    if value.startswith("/") and value.split("/")[1] in ("data", "spool", "config"):
        (tmp / value.split("/")[1]).mkdir(exist_ok=True)
        return str(tmp) + value
    return value


def _command(service: dict[str, Any], pg: dict[str, str], tmp: Path) -> tuple[list[str], int]:
    command = [_local(str(arg), pg, tmp) for arg in service["command"]]
    assert command[0] == "tuneloop"
    port = free_port()
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in command:
            command[command.index(flag) + 1] = value
    return command[1:], port


def _healthy(proc: subprocess.Popen[str], port: int, timeout_s: float = 120) -> str | None:
    """None once the server answers its /healthz, else what it said when it exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.communicate()[0]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return "no answer in time"


def test_compose_services_pass_the_settings_check(compose_pg: dict[str, str],
                                                  tmp_path: Path) -> None:
    """Every tuneloop service of docker-compose.yml, with its command line and environment
    (the shell giving only the variables Compose demands): the servers start and answer
    /healthz, the other commands get past the settings check (they stop later: no cycle file,
    no UI password)."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    shell = {"TUNELOOP_ADMIN_TOKEN": secrets.token_hex(16), "TUNELOOP_PG_PASSWORD": "trust",
             "TUNELOOP_PG_ADMIN_PASSWORD": "trust"}
    ran = []
    for name, service in services.items():
        if str(service.get("command", [""])[0]) != "tuneloop":
            continue
        folder = tmp_path / name
        folder.mkdir()
        args, port = _command(service, compose_pg, folder)
        env = _env(**{key: _local(_interpolate(str(value), shell), compose_pg, folder)
                      for key, value in (service.get("environment") or {}).items()},
                   TUNELOOP_STATE_DIR=str(folder / "state"))
        if args[0] != "serve":
            done = _run(args, env, folder)
            said = " ".join((done.stdout + done.stderr).split())
            assert REFUSED not in said and "Traceback" not in said, (name, said)
            ran.append(name)
            continue
        proc = subprocess.Popen([sys.executable, "-m", "tuneloop", *args], env=env, cwd=folder,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            failed = _healthy(proc, port)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        assert failed is None, (name, failed)
        if "TUNELOOP_SQL_DB" in env:
            # a command run in the container (`docker compose exec proxy-1 tuneloop sql ...`)
            done = _run(["sql", "SELECT 1 AS one"], env, folder)
            said = " ".join((done.stdout + done.stderr).split())
            assert done.returncode == 0 and REFUSED not in said, (name, said)
        ran.append(name)
    assert {"proxy", "proxy-1", "proxy-2", "ui", "ui-replicas", "scheduler",
            "scheduler-replicas"} <= set(ran)


def _command_paths(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from _command_paths(command, (*path, name))


def test_help_never_checks_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """r12x2 LOW 6: `tuneloop export --help` with TUNELOOP_SQL_DB set and TUNELOOP_DB unset
    was refused by the group's settings check; every command's help shows whatever the
    settings are (the command itself still refuses them when it runs)."""
    from click.testing import CliRunner

    from tuneloop.cli import main

    for name in [k for k in os.environ if k.startswith("TUNELOOP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TUNELOOP_SQL_DB", "postgresql://tuneloop_sql@127.0.0.1:1/tuneloop")
    runner = CliRunner()
    paths = list(_command_paths(main))
    assert ("export",) in paths and len(paths) > 20
    for path in paths:
        for flag in ("--help", "-h"):
            done = runner.invoke(main, [*path, flag])
            assert done.exit_code == 0 and "Usage: " in done.output, (path, flag, done.output)
    refused = runner.invoke(main, ["export"])
    assert refused.exit_code != 0 and REFUSED in refused.output, refused.output
