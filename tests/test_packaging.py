"""What a newcomer meets first: the README's commands, the compose file, the console script."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_install_and_test_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:12]
    text = "\n".join(head)
    assert "pip install -e ." in text and "tuneloop serve" in text
    assert ".ci/run" in text
    ci = (ROOT / ".ci/run").read_text()
    assert "python -m pytest" in ci and "apt-get install" in ci


def test_compose_file_parses_with_the_proxy_and_its_volume() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    proxy = services["proxy"]
    assert proxy["command"][:2] == ["tuneloop", "serve"]
    assert "--db" in proxy["command"]
    volume, mount = proxy["volumes"][0].split(":")
    assert volume in compose["volumes"] and mount == "/data"
    for service in services.values():
        assert "build" in service or "image" in service


REPLICAS_UP = "docker compose --profile replicas up -d lb ui-replicas"
INIT_SCRIPT = (ROOT / "deploy/postgres-init.sh").read_text()
INIT_ROLES = (re.findall(r"TUNELOOP_PG_ROLE:-(\w+)", INIT_SCRIPT)[0],
              re.findall(r"TUNELOOP_PG_SQL_ROLE:-(\w+)", INIT_SCRIPT)[0])
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")
FROM_ENV = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:-|:\?[^}]*)?\}$")


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _started_by(services: dict[str, Any], targets: list[str]) -> set[str]:
    """`docker compose up TARGETS`: the targets and what they depend on, transitively."""
    started: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name not in started:
            started.add(name)
            todo.extend(services[name].get("depends_on") or {})
    return started


def _host_ports(services: dict[str, Any], names: set[str]) -> list[str]:
    return [port.split(":")[0] for name in names for port in services[name].get("ports", [])]


def test_compose_replicas_profile_runs_two_replicas_on_postgres_behind_haproxy() -> None:
    compose = _compose()
    services = compose["services"]
    in_profile = {name for name, service in services.items()
                  if "replicas" in service.get("profiles", [])}
    assert in_profile == {"postgres", "proxy-1", "proxy-2", "lb", "ui-replicas",
                          "scheduler-replicas"}
    # the default is untouched: `docker compose up -d` starts the one-machine proxy and app
    assert {name for name, service in services.items() if "profiles" not in service} == {
        "proxy", "ui"}

    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:1[56](\.\d+)*", postgres["image"])
    assert postgres["volumes"][0].split(":")[0] in compose["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert FROM_ENV.match(postgres["environment"]["POSTGRES_PASSWORD"])
    init = [v for v in postgres["volumes"] if ":/docker-entrypoint-initdb.d/" in v]
    assert [v.split(":")[0] for v in init] == ["./deploy/postgres-init.sh"]
    assert init[0].endswith(".sh:ro")
    assert (ROOT / "deploy/postgres-init.sh").stat().st_mode & 0o111  # run, not sourced
    # the replicas' password reaches the init script; the superuser's is another one
    replica_password = services["proxy-1"]["environment"]["PGPASSWORD"]
    assert postgres["environment"]["TUNELOOP_PG_PASSWORD"] == replica_password
    assert postgres["environment"]["POSTGRES_PASSWORD"] != replica_password

    spools = set()
    for name in ("proxy-1", "proxy-2"):
        replica = services[name]
        command = replica["command"]
        assert command[:2] == ["tuneloop", "serve"]
        url = urlsplit(command[command.index("--db") + 1])
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.password is None
        assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
        # neither the store's role nor the read-only SQL role is the image's superuser
        # (POSTGRES_USER); deploy/postgres-init.sh creates both, plain
        sql_url = urlsplit(replica["environment"]["TUNELOOP_SQL_DB"])
        assert (sql_url.scheme, sql_url.hostname, sql_url.path, sql_url.password) == (
            "postgresql", "postgres", url.path, None)
        superuser = postgres["environment"]["POSTGRES_USER"]
        assert len({superuser, url.username, sql_url.username}) == 3
        assert (url.username, sql_url.username) == INIT_ROLES
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "/healthz" in " ".join(replica["healthcheck"]["test"])
        env = replica["environment"]
        assert env["TUNELOOP_ADMIN_TOKEN"].startswith("${TUNELOOP_ADMIN_TOKEN:?")
        assert env["PGPASSWORD"] == postgres["environment"]["TUNELOOP_PG_PASSWORD"]
        assert "ports" not in replica  # reached through the load balancer only
        (volume,) = [v for v in replica["volumes"] if v.endswith(":" + env["TUNELOOP_SPOOL_DIR"])]
        assert volume.split(":")[0] in compose["volumes"]
        spools.add(volume)
    assert len(spools) == 2  # a spool of its own each

    lb = services["lb"]
    assert lb["image"].startswith("haproxy:") and lb["ports"] == ["4000:4000"]
    assert "healthcheck" in lb and "healthcheck" in services["ui-replicas"]
    source, target, _ = lb["volumes"][0].split(":")
    config = (ROOT / source).read_text()
    assert target == "/usr/local/etc/haproxy/haproxy.cfg"
    servers = re.findall(r"^\s*server (\S+) (\S+)", config, re.M)
    assert servers == [("proxy-1", "proxy-1:4000"), ("proxy-2", "proxy-2:4000")]
    for name in ("ui-replicas", "scheduler-replicas"):
        command = services[name]["command"]
        assert command[command.index("--api") + 1] == "http://lb:4000"


def test_compose_commands_never_start_both_stores_or_share_a_port() -> None:
    services = _compose()["services"]
    readme = (ROOT / "README.md").read_text()
    header = (ROOT / "docker-compose.yml").read_text()
    assert REPLICAS_UP in readme and REPLICAS_UP in header
    targets = REPLICAS_UP.split("up -d ")[1].split()
    replicas = _started_by(services, targets)
    assert replicas == {"postgres", "proxy-1", "proxy-2", "lb", "ui-replicas"}
    default = {name for name, service in services.items() if "profiles" not in service}
    for started in (replicas, default, _started_by(services, ["scheduler-replicas", *targets])):
        ports = _host_ports(services, started)
        assert len(ports) == len(set(ports)), started
    assert sorted(_host_ports(services, replicas)) == sorted(_host_ports(services, default))


def test_compose_file_holds_no_secret() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"postgres(ql)?://[^/@\s]*:[^/@\s]*@", text)  # no password in a URL
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                match = FROM_ENV.match(str(value))
                assert match, f"{name}: {key} must come from the environment"
                assert match.group(1) != ":-" or str(value).endswith(":-}"), (
                    f"{name}: {key} has a default value")


def test_console_script_and_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["tuneloop"] == "tuneloop.cli:main"
    assert {"test", "dev"} <= project["optional-dependencies"].keys()
    out = subprocess.run([sys.executable, "-m", "tuneloop.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("serve", "sql"):
        assert command in out
