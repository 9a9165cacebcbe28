"""What a newcomer meets first: the README's commands, the compose file, the console script."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

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


def test_console_script_and_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["tuneloop"] == "tuneloop.cli:main"
    assert {"test", "dev"} <= project["optional-dependencies"].keys()
    out = subprocess.run([sys.executable, "-m", "tuneloop.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("serve", "sql"):
        assert command in out
