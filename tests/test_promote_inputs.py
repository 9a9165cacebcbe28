"""Promotions and routes refuse what cannot be meant (outside review r14h, LOW): a canary share
given as "10" or true (taken as 1%), above the cycle's cap (99.99999), not a number (`--canary
nan` was called "too small"); a blank model name, or the alias itself as its own canary; a key
variable the proxy's environment does not hold; weights whose total overflows to inf (100% of
the traffic then went to the last target). Clear 400s from the API, exit 2 from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, ProxyServer
from tuneloop.cli import main
from tuneloop.errors import BadRequest

ALIAS = "support-bot"
STABLE, CANARY = "stable-model", "canary-model"
NOT_A_SHARE = "the canary share must be a number between 0.1 and 90 (percent), or 100"


@pytest.mark.parametrize(("body", "message"), [
    ({"model": CANARY, "canary": "10"}, NOT_A_SHARE),
    ({"model": CANARY, "canary": True}, NOT_A_SHARE),
    ({"model": CANARY, "canary": -5}, NOT_A_SHARE),
    ({"model": CANARY, "canary": 100.5}, NOT_A_SHARE),
    ({"model": CANARY, "canary": 99.99999}, "canary share of 99.99999% is too large"),
    ({"model": CANARY, "canary": 90.5}, "give at most 90 (percent), or 100 to promote fully"),
    ({"model": " ", "canary": 10}, "a model name cannot be blank"),
    ({"model": " canary-model", "canary": 10}, "starts or ends with white space"),
    ({"model": ALIAS, "canary": 10}, "would send 10% of its traffic to the default upstream"),
    ({"model": CANARY, "canary": 10, "api_key_env": "TUNELOOP_TEST_UNSET_KEY"},
     "the key variable TUNELOOP_TEST_UNSET_KEY is not set in the proxy's environment"),
])
def test_the_promote_api_refuses_what_cannot_be_meant(
        proxy: ProxyServer, body: dict[str, Any], message: str) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    response = proxy.http().post(f"/admin/routes/{ALIAS}/promote", json=body,
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert [t["model"] for t in admin.routes()[ALIAS]["targets"]] == [STABLE]


def test_the_bounds_themselves_are_taken(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    with pytest.raises(BadRequest, match="too large"):
        admin.promote(ALIAS, CANARY, canary=90.001)
    opened = admin.promote(ALIAS, CANARY, canary=90)
    assert [(t["model"], t["weight"]) for t in opened["spec"]["targets"]] == [
        (STABLE, 10.0), (CANARY, 90.0)]
    full = admin.promote(ALIAS, CANARY, canary=100)
    assert [t["model"] for t in full["spec"]["targets"]] == [CANARY]
    # the alias served as itself (the route that keeps today's traffic) stays a full promotion
    itself = admin.promote(ALIAS, ALIAS)
    assert [t["model"] for t in itself["spec"]["targets"]] == [ALIAS]


@pytest.mark.parametrize(("targets", "message"), [
    ([{"model": "a", "weight": 1e308}, {"model": "b", "weight": 1e308}],
     "weight: Input should be less than or equal to 1000000"),
    ([{"model": "a", "weight": 2e6}], "less than or equal to 1000000"),
    ([{"model": "\t"}], "a model name cannot be blank"),
    ([{"model": "a", "api_key_env": "TUNELOOP_TEST_UNSET_KEY"}],
     "TUNELOOP_TEST_UNSET_KEY is not set in the proxy's environment"),
])
def test_a_route_table_refuses_them_too(proxy: ProxyServer, targets: list[dict[str, Any]],
                                        message: str) -> None:
    response = proxy.http().put("/admin/routes", json={"x": {"targets": targets}},
                                headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert proxy.admin().routes() == {}


def test_the_largest_weights_still_split_the_traffic(proxy: ProxyServer) -> None:
    with pytest.raises(BadRequest, match="less than or equal to 1000000"):
        proxy.admin().put_routes({"x": {"targets": [{"model": "a", "weight": 1e308},
                                                    {"model": "b", "weight": 1e308}]}})
    proxy.admin().put_routes({"x": {"targets": [{"model": "a", "weight": 1e6},
                                                {"model": "b", "weight": 1e6}]}})
    client = proxy.openai()
    served = {client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hi"}]).model for _ in range(40)}
    assert served == {"a", "b"}


@pytest.mark.parametrize(("share", "message"), [
    ("nan", NOT_A_SHARE), ("inf", NOT_A_SHARE), ("-1", NOT_A_SHARE),
    ("95", "too large"),
])
@pytest.mark.parametrize("command", [["promote", "--alias", ALIAS, "--model", CANARY],
                                     ["jobs", "serve", "ftjob-1", "--promote", ALIAS]])
def test_the_cli_refuses_a_share_before_asking_the_server(
        command: list[str], share: str, message: str, tmp_path: Path) -> None:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": "http://127.0.0.1:9"}
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), *command,
                                       "--canary", share], env=env)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
