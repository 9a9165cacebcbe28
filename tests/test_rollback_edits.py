"""A rollback never silently undoes a person's edit of the route (r14f #5), and promotions and
rollbacks take an optimistic `expect_seq` guard (r14f item 3), on a real proxy: what reaches
the fake upstream and the stored route are the evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores
from tests.test_promotion import ALIAS, BASE, FT, FT2, SPARE, reached, send
from tuneloop.cli import main
from tuneloop.errors import BadRequest, Conflict

pytestmark = both_stores

OTHER = "gpt-4o"  # the model a person swaps in, or splits with


def weights(spec: dict[str, Any]) -> dict[str, float]:
    return {t["model"]: float(t.get("weight", 100)) for t in spec["targets"]}


def edit(proxy: ProxyServer, spec: dict[str, Any]) -> dict[str, Any]:
    """A person's hand edit (PUT /admin/routes); the route as stored."""
    stored: dict[str, Any] = proxy.admin().put_routes({ALIAS: spec}, force=True)[ALIAS]
    return stored


def test_rolling_back_a_canary_keeps_a_stable_model_swapped_by_hand(
        proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": BASE}], "fallbacks": [{"model": SPARE}]}})
    canary = admin.promote(ALIAS, FT, canary=10)["spec"]
    edit(proxy, {**canary, "targets": [{"model": OTHER, "weight": 90}, canary["targets"][1]]})
    rolled = admin.rollback(ALIAS)
    # on main: back to BASE 100, the person's swap silently undone
    assert rolled["spec"] == {
        "targets": [{"model": OTHER, "provider": "openai", "weight": 100.0}],
        "fallbacks": [{"model": SPARE, "provider": "openai", "weight": 100.0}]}
    assert rolled["rebuilt"] is True and rolled["model"] == FT
    assert admin.route_history(ALIAS)[0]["detail"]["rebuilt"] is True
    mark = len(proxy.upstream.state.requests)
    send(proxy, 5)
    assert reached(proxy, mark) == {OTHER: 5}


def test_rolling_back_a_canary_keeps_an_ab_split_made_during_it(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": BASE}],
                              "fallbacks": [{"model": SPARE}, {"model": FT}]}})
    canary = admin.promote(ALIAS, FT, canary=10, stop="###")["spec"]
    assert [f["model"] for f in canary["fallbacks"]] == [SPARE]  # FT became the canary
    split = {"model": OTHER, "weight": 45, "read_timeout_s": 30.0,
             "transforms": [{"type": "stop", "stop": "END"}]}
    edit(proxy, {**canary, "targets": [{"model": BASE, "weight": 45}, split,
                                       canary["targets"][1]]})
    spec = admin.rollback(ALIAS)["spec"]
    # on main: BASE 100, the split dropped
    assert weights(spec) == {BASE: 50.0, OTHER: 50.0}
    # its other fields kept
    assert spec["targets"][1] == {**split, "provider": "openai", "weight": 50.0}
    # the fallback the canary promotion took FT out of comes back, as an exact restore had it
    assert [f["model"] for f in spec["fallbacks"]] == [SPARE, FT]
    assert admin.route_canary(ALIAS)["canary"] is None


def test_a_rebuilt_route_keeps_its_weights_within_the_bound(proxy: ProxyServer) -> None:
    """The canary's weight is given back in proportion, but never past the largest weight a
    route may have (1e6): a split edited at the bound used to come back with 1.5e6, a route
    the proxy refuses to write (and, before it read such routes scaled, failed to load)."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})
    canary = admin.promote(ALIAS, FT, canary=10)["spec"]
    edit(proxy, {**canary, "targets": [{"model": BASE, "weight": 1e6},
                                       {"model": OTHER, "weight": 5e5}, canary["targets"][1]]})
    rolled = admin.rollback(ALIAS)
    assert rolled["rebuilt"] is True
    assert weights(rolled["spec"]) == {BASE: 1e6, OTHER: 5e5}
    assert weights(admin.routes()[ALIAS]) == {BASE: 1e6, OTHER: 5e5}
    admin.put_routes({ALIAS: admin.routes()[ALIAS]})  # what GET shows can be written back
    mark = len(proxy.upstream.state.requests)
    send(proxy, 30)
    assert set(reached(proxy, mark)) == {BASE, OTHER}


def test_a_rollback_onto_a_legacy_route_keeps_what_each_target_gets(
        proxy: ProxyServer) -> None:
    """The promotion moved the route-level suffix and stop onto the targets: the target that
    stays keeps getting them, the one a person added gets what the person set."""
    admin = proxy.admin()
    admin.put_routes({"legacy": {"targets": [{"model": "davinci-002"}],
                                 "prompt_suffix": "\n\n###\n\n", "stop": "###"}})
    canary = admin.promote("legacy", "ft:davinci-002:acme::v1", canary=10)["spec"]
    admin.put_routes({"legacy": {"targets": [
        {**canary["targets"][0], "weight": 45}, {"model": "babbage-002", "weight": 45},
        canary["targets"][1]]}}, force=True)
    spec = admin.rollback("legacy")["spec"]
    assert weights(spec) == {"davinci-002": 50.0, "babbage-002": 50.0}  # main: davinci 100
    assert "prompt_suffix" not in spec and "stop" not in spec
    client = proxy.openai()
    for n in range(30):
        client.completions.create(model="legacy", prompt=f"Where is order {n}?",
                                  extra_headers={"x-tuneloop-user": f"user-{n}"})
    sent = {r.json["model"]: r.json for r in proxy.upstream.state.requests
            if r.path == "/v1/completions"}
    assert set(sent) == {"davinci-002", "babbage-002"}
    assert sent["davinci-002"]["prompt"].endswith("\n\n###\n\n")
    assert sent["davinci-002"]["stop"] == "###"
    assert "stop" not in sent["babbage-002"]


def test_a_full_promotion_edited_since_is_not_rolled_back_unless_forced(
        proxy: ProxyServer, tmp_path: Path) -> None:
    admin = proxy.admin()
    original = admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})[ALIAS]
    full = admin.promote(ALIAS, FT)
    edited = {**full["spec"], "targets": [{"model": FT, "weight": 50},
                                          {"model": OTHER, "weight": 50}]}
    edited = edit(proxy, edited)
    with pytest.raises(Conflict) as refused:
        admin.rollback(ALIAS)  # on main: back to BASE, the split undone
    assert refused.value.code == "route_edited"
    message = refused.value.message
    assert f"since {FT} was promoted (#{full['seq']})" in message
    assert f"#{full['seq'] + 1} replace by admin" in message
    assert f"now sends {FT} 50%, {OTHER} 50%" in message and "--force" in message
    assert admin.routes()[ALIAS] == edited
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    db = ["--db", str(tmp_path / "cli.duckdb")]
    printed = CliRunner().invoke(main, [*db, "rollback", "--alias", ALIAS], env=env)
    assert printed.exit_code == Conflict.exit_code == 5, printed.output
    assert "was changed since" in printed.output and admin.routes()[ALIAS] == edited
    printed = CliRunner().invoke(main, [*db, "rollback", "--alias", ALIAS, "--force"], env=env)
    assert printed.exit_code == 0, printed.output
    assert admin.routes()[ALIAS] == original
    assert admin.route_history(ALIAS)[0]["detail"]["forced"] is True


def test_the_api_forces_a_rollback_with_force_true(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    original = admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})[ALIAS]
    admin.promote(ALIAS, FT)
    edit(proxy, {"targets": [{"model": OTHER}]})
    with proxy.http() as http:
        auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        refused = http.post(f"/admin/routes/{ALIAS}/rollback", json={}, headers=auth)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "route_edited"
        bad = http.post(f"/admin/routes/{ALIAS}/rollback", json={"force": "yes"}, headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "force"
        forced = http.post(f"/admin/routes/{ALIAS}/rollback", json={"force": True},
                           headers=auth)
    assert forced.status_code == 200, forced.text
    assert forced.json()["spec"] == original


def test_stacked_rollbacks_after_an_edit(proxy: ProxyServer) -> None:
    """The canary rolled back onto the edit; the full promotion under it is then refused
    (the edit is still there), and a canary the later one replaced is not re-opened when the
    edit took the route away from it."""
    admin = proxy.admin()
    original = admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})[ALIAS]
    admin.promote(ALIAS, FT)
    spec = admin.promote(ALIAS, FT2, canary=10)["spec"]
    edit(proxy, {**spec, "targets": [{"model": FT, "weight": 45}, {"model": OTHER, "weight": 45},
                                     spec["targets"][1]]})
    assert weights(admin.rollback(ALIAS)["spec"]) == {FT: 50.0, OTHER: 50.0}
    with pytest.raises(Conflict, match=f"since {FT} was promoted"):
        admin.rollback(ALIAS, model=FT)  # right after a rollback: named
    assert admin.rollback(ALIAS, force=True)["spec"] == original
    with pytest.raises(Conflict, match="no promotion to roll back"):
        admin.rollback(ALIAS)

    admin.promote(ALIAS, FT, canary=10)
    spec = admin.promote(ALIAS, FT2, canary=10)["spec"]
    assert weights(spec) == {BASE: 90.0, FT2: 10.0}
    edit(proxy, {**spec, "targets": [{"model": OTHER, "weight": 90}, spec["targets"][1]]})
    assert weights(admin.rollback(ALIAS)["spec"]) == {OTHER: 100.0}
    assert admin.route_canary(ALIAS)["canary"] is None  # FT's canary is not on the route
    with pytest.raises(Conflict, match=f"the canary of {FT} no longer shares the route"):
        admin.rollback(ALIAS, model=FT)


def test_no_edit_since_the_promotion_restores_exactly(proxy: ProxyServer) -> None:
    """A person's canary put on top and rolled back is no edit: the canary under it is
    re-opened, then restored exactly (weights, fallbacks). Nor is a hand edit that put the
    route back as it was before the canary: the rollback just closes the episode."""
    admin = proxy.admin()
    original = admin.put_routes({ALIAS: {"targets": [{"model": BASE, "weight": 7}],
                                         "fallbacks": [{"model": SPARE}]}})[ALIAS]
    first = admin.promote(ALIAS, FT, canary=60)["spec"]
    admin.promote(ALIAS, FT2, canary=10)
    assert admin.rollback(ALIAS)["spec"] == first
    state = admin.route_canary(ALIAS)
    assert state["canary"]["model"] == FT and state["changed_since_promotion"] is False
    restored = admin.rollback(ALIAS, model=FT)
    assert restored["spec"] == original and "rebuilt" not in restored
    admin.promote(ALIAS, FT, canary=10)
    edit(proxy, original)
    assert admin.rollback(ALIAS)["spec"] == original


def test_expect_seq_refuses_a_write_on_a_route_changed_since_it_was_read(
        proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})
    admin.promote(ALIAS, FT, canary=10)
    read = admin.route_canary(ALIAS)
    assert read["seq"] == admin.route_history(ALIAS)[0]["seq"]  # on main: no seq
    assert read["changed_since_promotion"] is False
    assert admin.route_health(ALIAS)["seq"] == read["seq"]
    # a person's promotion between the read and the decision
    admin.promote(ALIAS, FT2, canary=10)
    changed = admin.routes()[ALIAS]
    with pytest.raises(Conflict) as stale:
        admin.promote(ALIAS, FT, canary=100, expect_seq=read["seq"])
    assert stale.value.code == "route_changed"
    with pytest.raises(Conflict) as stale:
        admin.rollback(ALIAS, expect_seq=read["seq"])
    assert stale.value.code == "route_changed"
    assert admin.routes()[ALIAS] == changed  # neither write went through
    fresh = admin.route_canary(ALIAS)
    assert fresh["seq"] > read["seq"]
    assert weights(admin.rollback(ALIAS, expect_seq=fresh["seq"])["spec"]) == {BASE: 90.0,
                                                                                FT: 10.0}
    again = admin.route_canary(ALIAS)["seq"]
    promoted = admin.promote(ALIAS, FT, expect_seq=again)
    assert weights(promoted["spec"]) == {FT: 100.0}
    with pytest.raises(BadRequest, match="expect_seq"):
        admin.promote(ALIAS, FT2, canary=10, expect_seq=-1)
    with httpx.Client(base_url=proxy.url) as http:
        bad = http.post(f"/admin/routes/{ALIAS}/rollback", json={"expect_seq": "7"},
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expect_seq"


def test_a_hand_edit_shows_in_the_canary_read(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})
    spec = admin.promote(ALIAS, FT, canary=10)["spec"]
    edit(proxy, {**spec, "targets": [{"model": BASE, "weight": 45},
                                     {"model": OTHER, "weight": 45}, spec["targets"][1]]})
    state = admin.route_canary(ALIAS)
    assert state["canary"]["model"] == FT and state["changed_since_promotion"] is True
    assert admin.route_health(ALIAS)["changed_since_promotion"] is True

