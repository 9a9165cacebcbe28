"""A canary share too small ever to be judged is refused (outside review #9a): `canary: 1e-300`
opened a canary that never got a request, never judged, left open for good."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, ProxyServer
from tuneloop.cli import main
from tuneloop.errors import BadRequest

ALIAS = "support-bot"
STABLE, CANARY = "stable-model", "canary-model"


@pytest.mark.parametrize("share", [1e-300, 0.0001, 0.09])
def test_the_admin_api_refuses_a_canary_share_below_the_floor(
        proxy: ProxyServer, share: float) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    with pytest.raises(BadRequest, match=r"too small: the canary would hardly get a request"):
        admin.promote(ALIAS, CANARY, canary=share)
    assert [t["model"] for t in admin.routes()[ALIAS]["targets"]] == [STABLE]
    assert admin.route_canary(ALIAS)["canary"] is None
    opened = admin.promote(ALIAS, CANARY, canary=0.1)  # the floor itself is a canary
    assert [(t["model"], t["weight"]) for t in opened["spec"]["targets"]] == [
        (STABLE, 99.9), (CANARY, 0.1)]


@pytest.mark.parametrize("command", [["promote", "--alias", ALIAS, "--model", CANARY],
                                     ["jobs", "serve", "ftjob-1", "--promote", ALIAS]])
def test_the_cli_refuses_it_before_asking_the_server(command: list[str], tmp_path: Path) -> None:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": "http://127.0.0.1:9"}
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), *command,
                                       "--canary", "1e-300"], env=env)
    assert result.exit_code == 2, result.output
    assert "too small: the canary would hardly get a request" in result.output
