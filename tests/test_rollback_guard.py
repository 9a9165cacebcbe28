"""A late or repeated rollback never silently undoes an older promotion (r14h #5, h2 #3):
the CLI's `rollback` names what it undoes; the server (API and CLI alike) refuses right after
another rollback unless `model` names the model (or `force`), and `--model` / the API's
`model` refuse a rollback that would undo another model's promotion. Real proxy, real store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores
from tuneloop.cli import main
from tuneloop.client import AdminClient
from tuneloop.errors import Conflict

pytestmark = both_stores

ALIAS, OLD, V1, V2 = "support-bot", "old-model-2024", "ft-v1", "ft-v2"


def models(proxy: ProxyServer) -> list[str]:
    return [t["model"] for t in proxy.admin().routes()[ALIAS]["targets"]]


def cli(proxy: ProxyServer, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    printed = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "rollback",
                                        "--alias", ALIAS, *args], env=env)
    return printed.exit_code, printed.output


def cycle_rolled_back_v2(proxy: ProxyServer) -> None:
    """Last month's full promotion of V1, today's canary of V2 rolled back by the cycle."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": OLD}]}})
    AdminClient(proxy.url, ADMIN_TOKEN, actor="alice").promote(ALIAS, V1)
    admin.promote(ALIAS, V2, canary=10)
    AdminClient(proxy.url, ADMIN_TOKEN, actor="cycle").rollback(
        ALIAS, verdict={"verdict": "rollback"})


def test_a_late_cli_rollback_is_refused_naming_what_it_would_undo(
        proxy: ProxyServer, tmp_path: Path) -> None:
    cycle_rolled_back_v2(proxy)
    code, output = cli(proxy, tmp_path)
    output = " ".join(output.split())  # the console wraps the server's message
    # on main: exit 0, `rolled back ft-v1 on support-bot: old-model-2024 100%`
    assert code == Conflict.exit_code, output
    assert "just rolled back" in output and f"undid {V2}" in output, output
    assert f"would undo {V1} (promoted fully" in output and "by alice" in output, output
    assert f"--model {V1}" in output, output
    assert models(proxy) == [V1]
    code, output = cli(proxy, tmp_path, "--model", V2)  # the one the person saw
    assert code == Conflict.exit_code, output
    assert f"{V2} was rolled back already" in output and "by cycle" in output, output
    assert f"would undo {V1}" in output and models(proxy) == [V1]
    code, output = cli(proxy, tmp_path, "--model", V1)  # meant: undo V1 as well
    assert code == 0, output
    assert models(proxy) == [OLD]


def test_the_cli_says_which_promotion_it_undid(proxy: ProxyServer, tmp_path: Path) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": OLD}]}})
    AdminClient(proxy.url, ADMIN_TOKEN, actor="alice").promote(ALIAS, V1, canary=10)
    code, output = cli(proxy, tmp_path)
    assert code == 0, output
    assert f"rolled back {V1} (promoted as a 10% canary at " in output, output
    assert "by alice" in output and models(proxy) == [OLD]


def test_the_cli_rollback_takes_expect_seq(proxy: ProxyServer, tmp_path: Path) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": OLD}]}})
    seq = admin.promote(ALIAS, V1, canary=10)["seq"]
    admin.promote(ALIAS, V1, canary=50)  # moved since the person read it
    code, output = cli(proxy, tmp_path, "--expect-seq", str(seq))
    assert code == Conflict.exit_code and "changed since it was read" in output, output
    assert cli(proxy, tmp_path, "--expect-seq", str(seq + 1))[0] == 0
    assert models(proxy) == [OLD]


def test_the_api_rollback_refuses_another_models_promotion(proxy: ProxyServer) -> None:
    cycle_rolled_back_v2(proxy)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{proxy.url}/admin/routes/{ALIAS}/rollback"
    refused = httpx.post(url, json={"model": V2}, headers=auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "rollback_other_model"
    assert models(proxy) == [V1]
    assert httpx.post(url, json={"model": ""}, headers=auth).status_code == 400
    assert httpx.post(url, json={"model": 5}, headers=auth).status_code == 400
    done = httpx.post(url, json={"model": V1}, headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["undone"]["model"] == V1
    assert models(proxy) == [OLD]


def test_a_second_api_rollback_right_after_one_is_refused(proxy: ProxyServer) -> None:
    """h2 #3: the cycle rolled back V2's canary; a second POST .../rollback without `model`
    (a person's script, the review app after the cycle) undid V1's full promotion too on
    main. Now 409 `just_rolled_back`, naming both; `model` or `force` lets it through."""
    cycle_rolled_back_v2(proxy)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{proxy.url}/admin/routes/{ALIAS}/rollback"
    refused = httpx.post(url, headers=auth)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "just_rolled_back", error
    assert f"undid {V2}" in error["message"] and "by cycle" in error["message"], error
    assert f"would undo {V1} (promoted fully" in error["message"], error
    assert f'"model":"{V1}"' in error["message"] and '"force": true' in error["message"]
    assert models(proxy) == [V1]
    with pytest.raises(Conflict):  # the client and every caller get the same answer
        proxy.admin().rollback(ALIAS, verdict={"verdict": "rollback"})
    assert models(proxy) == [V1]
    done = httpx.post(url, json={"force": True}, headers=auth)
    assert done.status_code == 200 and done.json()["undone"]["model"] == V1, done.text
    assert models(proxy) == [OLD]

