"""A whole-table write (PUT /admin/routes, `tuneloop routes set`) never silently undoes what
happened since the table was read, nor drops an open canary (r14h #6): `expect_seq` (the
table version read) refuses to change an alias that moved since; an alias with an open canary
is changed or deleted only when forced; the CLI refuses a FILE that leaves aliases out unless
--force. Real proxy, real store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores
from tuneloop.cli import main
from tuneloop.errors import Conflict, PreconditionRequired

pytestmark = both_stores

ALIAS, OTHER_ALIAS = "support-bot", "other-bot"
STABLE, CANARY = "stable-model", "canary-model"


def models(proxy: ProxyServer, alias: str = ALIAS) -> list[str]:
    return [t["model"] for t in proxy.admin().routes()[alias]["targets"]]


def with_canary(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]},
                      OTHER_ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=10)


def cli(proxy: ProxyServer, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    printed = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "routes", *args],
                                 env=env)
    return printed.exit_code, printed.output


def test_a_stale_table_does_not_revert_a_full_promotion(proxy: ProxyServer) -> None:
    with_canary(proxy)
    admin = proxy.admin()
    read = admin.routes_with_seq()  # a person reads the table
    assert read["routes"] == admin.routes() and read["seqs"][ALIAS] == read["seq"]
    admin.promote(ALIAS, CANARY, expect_seq=admin.route_canary(ALIAS)["seq"])  # the cycle
    table = read["routes"]
    table[OTHER_ALIAS] = {"targets": [{"model": "gpt-4o-mini"}]}
    with pytest.raises(Conflict) as refused:
        admin.put_routes(table, expect_seq=read["seq"])
    assert refused.value.code == "route_changed"
    assert f"{ALIAS}: #{read['seq'] + 1} promote by admin" in refused.value.message
    assert models(proxy) == [CANARY] and models(proxy, OTHER_ALIAS) == [STABLE]
    # an alias moved since but written as it is now is nothing undone: accepted
    fresh = admin.routes()
    fresh[OTHER_ALIAS] = {"targets": [{"model": "gpt-4o-mini"}]}
    admin.put_routes(fresh, expect_seq=read["seq"])
    assert models(proxy) == [CANARY] and models(proxy, OTHER_ALIAS) == ["gpt-4o-mini"]


def test_a_table_leaving_out_an_alias_with_an_open_canary_is_refused(
        proxy: ProxyServer) -> None:
    with_canary(proxy)
    admin = proxy.admin()
    with pytest.raises(Conflict) as refused:
        admin.put_routes({OTHER_ALIAS: {"targets": [{"model": "gpt-4o-mini"}]}},
                         expect_seq=admin.routes_with_seq()["seq"])
    assert refused.value.code == "open_canary"
    assert f"open canary of {CANARY}" in refused.value.message and "--force" in \
        refused.value.message
    assert models(proxy) == [STABLE, CANARY] and models(proxy, OTHER_ALIAS) == [STABLE]
    admin.put_routes({OTHER_ALIAS: {"targets": [{"model": "gpt-4o-mini"}]}}, force=True)
    assert ALIAS not in admin.routes()


def test_changing_an_alias_with_an_open_canary_needs_force(proxy: ProxyServer) -> None:
    with_canary(proxy)
    admin = proxy.admin()
    read = admin.routes_with_seq()
    table = read["routes"]
    table[ALIAS] = {"targets": [{"model": STABLE}]}  # a stale copy from before the canary
    with pytest.raises(Conflict) as refused:
        admin.put_routes(table, expect_seq=read["seq"])
    assert refused.value.code == "open_canary"
    assert models(proxy) == [STABLE, CANARY]
    table = admin.routes()  # the others are edited freely beside it
    table[OTHER_ALIAS] = {"targets": [{"model": "gpt-4o-mini"}]}
    admin.put_routes(table, expect_seq=read["seq"])
    assert models(proxy, OTHER_ALIAS) == ["gpt-4o-mini"]


def test_the_cli_refuses_a_file_leaving_aliases_out_and_a_stale_table(
        proxy: ProxyServer, tmp_path: Path) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]},
                      OTHER_ALIAS: {"targets": [{"model": STABLE}]}})
    code, output = cli(proxy, tmp_path, "show")
    assert code == 0 and "--expect-seq 2" in output, output
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({OTHER_ALIAS: {"targets": [{"model": "gpt-4o-mini"}]}}))
    code, output = cli(proxy, tmp_path, "set", str(partial))
    assert code == Conflict.exit_code and f"leaves out {ALIAS!r}" in output, output
    assert models(proxy) == [STABLE]
    admin.promote(ALIAS, CANARY)  # after the person read the table
    full = tmp_path / "full.json"
    full.write_text(json.dumps({ALIAS: {"targets": [{"model": STABLE}]},
                                OTHER_ALIAS: {"targets": [{"model": "gpt-4o-mini"}]}}))
    code, output = cli(proxy, tmp_path, "set", str(full), "--expect-seq", "2")
    assert code == Conflict.exit_code and "changed since it was read" in output, output
    assert models(proxy) == [CANARY]
    code, output = cli(proxy, tmp_path, "set", str(partial), "--force")
    assert code == 0, output
    assert list(admin.routes()) == [OTHER_ALIAS]


def test_the_cli_refuses_a_stale_copy_putting_a_promotion_back(
        proxy: ProxyServer, tmp_path: Path) -> None:
    """The probe's steps through the CLI with no --expect-seq: `routes show > table.json`,
    the cycle promotes its canary fully, the person edits another alias and sets the file."""
    with_canary(proxy)
    admin = proxy.admin()
    stale = admin.routes()
    admin.promote(ALIAS, CANARY)  # the cycle
    stale[OTHER_ALIAS] = {"targets": [{"model": "gpt-4o-mini"}]}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(stale))
    code, output = cli(proxy, tmp_path, "set", str(path))
    # on main: accepted, back to a 90/10 split that no canary watch knows of
    assert code == Conflict.exit_code and f"sets {ALIAS!r} back to its route of #3" in output
    assert "#4 promote by admin" in output, output
    assert models(proxy) == [CANARY] and models(proxy, OTHER_ALIAS) == [STABLE]
    code, output = cli(proxy, tmp_path, "set", str(path), "--force")  # meant it
    assert code == 0, output
    assert models(proxy) == [STABLE, CANARY]


def put_raw(proxy: ProxyServer, table: dict[str, Any], **params: str) -> httpx.Response:
    """PUT /admin/routes as any HTTP client would send it (no CLI, no read first)."""
    return proxy.http().put("/admin/routes", json=table, params=params,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})


def test_a_put_without_expect_seq_does_not_turn_a_full_promotion_back(
        proxy: ProxyServer) -> None:
    """h2 #2: a person copies the table during a 90/10 canary, the cycle promotes it fully,
    the person PUTs the copy (another alias edited) with no expect_seq. On main the full
    promotion silently became the old 90/10 split again (no open canary in /canary, a
    rollback refused). Now: 428, nothing written; with the version read, a 409 naming the
    promotion; `force` writes it as it is."""
    with_canary(proxy)
    admin = proxy.admin()
    stale = admin.routes()
    admin.promote(ALIAS, CANARY)  # the cycle
    stale[OTHER_ALIAS] = {"targets": [{"model": "gpt-4o-mini"}]}
    answer = put_raw(proxy, stale)
    assert answer.status_code == 428, answer.text
    error = answer.json()["error"]
    assert error["code"] == "expect_seq_required" and error["param"] == "expect_seq"
    assert "expect_seq" in error["message"] and "with_seq=true" in error["message"]
    assert "force=true" in error["message"], error
    assert models(proxy) == [CANARY] and models(proxy, OTHER_ALIAS) == [STABLE]
    assert admin.route_canary(ALIAS)["promotion"]["canary"] == 100
    with pytest.raises(PreconditionRequired):  # the client raises it as a Conflict
        admin.put_routes(stale)
    answer = put_raw(proxy, stale, expect_seq="3")  # read before the promotion (#4)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "route_changed"
    assert models(proxy) == [CANARY]
    assert put_raw(proxy, stale, force="true").status_code == 200
    assert models(proxy) == [STABLE, CANARY]


def test_a_put_without_expect_seq_does_not_delete_an_alias_left_out(
        proxy: ProxyServer) -> None:
    """h2 #2: on main a PUT leaving out an alias with no open canary deleted it silently."""
    both = {ALIAS: {"targets": [{"model": STABLE}]},
            OTHER_ALIAS: {"targets": [{"model": STABLE}]}}
    assert put_raw(proxy, both).status_code == 200  # the first table needs no version
    assert put_raw(proxy, both).status_code == 200  # nor one that changes nothing
    only = {OTHER_ALIAS: {"targets": [{"model": STABLE}]}}
    answer = put_raw(proxy, only)
    assert answer.status_code == 428, answer.text
    assert f"deletes {ALIAS!r} (left out)" in answer.json()["error"]["message"]
    assert sorted(proxy.admin().routes()) == [OTHER_ALIAS, ALIAS]
    seq = proxy.admin().routes_with_seq()["seq"]
    assert put_raw(proxy, only, expect_seq=str(seq)).status_code == 200  # read, then left out
    assert list(proxy.admin().routes()) == [OTHER_ALIAS]


def test_a_version_the_table_never_had_is_refused(proxy: ProxyServer) -> None:
    # r14 #3: a stale copy sent with expect_seq 1e9 (pasted from another store, or made up)
    # passed every "moved since" check and put a full promotion back to its canary split
    with_canary(proxy)
    admin = proxy.admin()
    stale = admin.routes()  # read during the 10% canary
    admin.promote(ALIAS, CANARY, expect_seq=admin.route_canary(ALIAS)["seq"])
    latest = admin.routes_with_seq()["seq"]
    for made_up in (latest + 1, 1_000_000_000):
        with pytest.raises(Conflict) as refused:
            admin.put_routes(stale, expect_seq=made_up)
        assert refused.value.code == "route_changed"
        assert f"its latest is #{latest}" in refused.value.message
    assert models(proxy) == [CANARY]
