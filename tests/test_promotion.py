"""Promotion, rollback and canary health on a real proxy: what reaches the fake upstream is
the proof of which model an alias serves."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer, both_stores
from tuneloop.cli import main
from tuneloop.errors import Conflict, Forbidden, NotFound

pytestmark = both_stores

ALIAS = "support-bot"
BASE = "gpt-4o-mini"
FT = "ft:gpt-4o-mini-2024-07-18:acme::v1"
FT2 = "ft:gpt-4o-mini-2024-07-18:acme::v2"
SPARE = "gpt-4o-mini-2024-07-18"


def send(proxy: ProxyServer, count: int, *, model: str = ALIAS,
         traffic: str | None = None) -> list[str]:
    """`count` chat requests, each from its own sticky user; their interaction ids."""
    client = proxy.openai()
    headers = {"x-tuneloop-traffic": traffic} if traffic else {}
    ids = []
    for n in range(count):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"question {n}"}],
            extra_headers={"x-tuneloop-user": f"user-{n}", **headers})
        ids.append(raw.headers["x-tuneloop-id"])
    return ids


def reached(proxy: ProxyServer, since: int = 0) -> collections.Counter[str]:
    return collections.Counter(r.json["model"] for r in proxy.upstream.state.requests[since:]
                               if r.path == "/v1/chat/completions")


def start_route(proxy: ProxyServer) -> dict[str, Any]:
    table = {ALIAS: {"targets": [{"model": BASE}], "fallbacks": [{"model": SPARE}]}}
    return proxy.admin().put_routes(table)[ALIAS]


def test_canary_then_full_then_rollback_restores_the_previous_target(
        proxy: ProxyServer) -> None:
    original = start_route(proxy)
    admin = proxy.admin()

    canary = admin.promote(ALIAS, FT, canary=50)
    assert [(t["model"], t["weight"]) for t in canary["spec"]["targets"]] == [(BASE, 50), (FT, 50)]
    assert [t["model"] for t in canary["spec"]["fallbacks"]] == [SPARE]
    mark = len(proxy.upstream.state.requests)
    send(proxy, 40)
    assert set(reached(proxy, mark)) == {BASE, FT}  # 40 sticky draws at 50%: both seen

    full = admin.promote(ALIAS, FT)
    assert [t["model"] for t in full["spec"]["targets"]] == [FT]
    assert [t["model"] for t in full["spec"]["fallbacks"]] == [BASE, SPARE]
    mark = len(proxy.upstream.state.requests)
    send(proxy, 10)
    assert reached(proxy, mark) == {FT: 10}

    restored = admin.rollback(ALIAS)
    assert restored["spec"] == original and restored["model"] == FT
    assert admin.routes()[ALIAS] == original
    mark = len(proxy.upstream.state.requests)
    send(proxy, 10)
    assert reached(proxy, mark) == {BASE: 10}

    history = admin.route_history(ALIAS)
    assert [h["action"] for h in history] == ["rollback", "promote", "promote", "replace"]
    assert history[0]["detail"] == {"undoes": history[2]["seq"], "model": FT}
    assert history[1]["detail"] == {"model": FT, "canary": 100.0}
    with pytest.raises(Conflict, match="no promotion to roll back"):
        admin.rollback(ALIAS)


def test_rollbacks_undo_promotions_in_turn(proxy: ProxyServer) -> None:
    original = start_route(proxy)
    admin = proxy.admin()
    admin.promote(ALIAS, FT)
    after_first = admin.routes()[ALIAS]
    admin.promote(ALIAS, FT2, canary=10)
    assert [(t["model"], t["weight"]) for t in admin.routes()[ALIAS]["targets"]] == [
        (FT, 90), (FT2, 10)]
    assert admin.rollback(ALIAS)["spec"] == after_first
    assert admin.rollback(ALIAS, model=FT)["spec"] == original  # right after one: named
    mark = len(proxy.upstream.state.requests)
    send(proxy, 5)
    assert reached(proxy, mark) == {BASE: 5}


def test_what_cannot_be_promoted_or_rolled_back(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    with pytest.raises(NotFound):
        admin.rollback("nobody")
    with pytest.raises(Conflict, match="has no route yet"):
        admin.promote("new-bot", FT, canary=10)
    created = admin.promote("new-bot", FT)
    assert created["previous"] is None and created["spec"]["targets"][0]["model"] == FT
    with pytest.raises(Conflict, match="no route before"):
        admin.rollback("new-bot")
    with pytest.raises(Conflict, match="already sends all its traffic"):
        admin.promote("new-bot", FT, canary=20)
    http = proxy.http()
    bad = http.post("/admin/routes/new-bot/promote", json={"model": FT, "canary": 0},
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "canary"
    assert admin.routes()["new-bot"] == created["spec"]  # nothing changed by the refusals


def test_reviewer_cannot_promote_or_roll_back(proxy: ProxyServer) -> None:
    original = start_route(proxy)
    reviewer = proxy.admin(REVIEWER_TOKEN)
    with pytest.raises(Forbidden):
        reviewer.promote(ALIAS, FT, canary=10)
    proxy.admin().promote(ALIAS, FT, canary=10)
    with pytest.raises(Forbidden):
        reviewer.rollback(ALIAS)
    assert reviewer.route_health(ALIAS)["alias"] == ALIAS  # reading is allowed
    assert proxy.admin().rollback(ALIAS)["spec"] == original
    with httpx.Client(base_url=proxy.url) as http:
        assert http.post(f"/admin/routes/{ALIAS}/rollback").status_code == 401


def test_legacy_route_carries_the_suffix_and_stop(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"legacy": {"targets": [{"model": "davinci-002"}]}})
    proxy.admin().promote("legacy", "ft:davinci-002:acme::v1", prompt_suffix="\n\n###\n\n",
                          stop="###")
    proxy.openai().completions.create(model="legacy", prompt="Where is my order?")
    sent = proxy.upstream.state.requests[-1].json
    assert sent["model"] == "ft:davinci-002:acme::v1"
    assert sent["prompt"] == "Where is my order?\n\n###\n\n" and sent["stop"] == "###"


def test_health_compares_targets_on_production_traffic_only(proxy: ProxyServer) -> None:
    start_route(proxy)
    proxy.admin().promote(ALIAS, "fail-500", canary=50)
    ids = send(proxy, 30)
    send(proxy, 6, traffic="evaluation")
    proxy.wait_logged(36)
    rows = {r[0]: r for r in proxy.sql(
        "SELECT id, route->>'primary', route->>'target', status_code FROM interactions")}
    stable = [i for i in ids if rows[i][1] == BASE]
    canary = [i for i in ids if rows[i][1] == "fail-500"]
    assert stable and canary
    # the stable target served them (a second opinion, before the route's fallbacks)
    assert all(rows[i][2] == BASE and rows[i][3] == 200 for i in canary)
    with proxy.http() as http:
        for i in stable:
            assert http.post("/v1/feedback", json={"id": i, "score": 1}).status_code == 201
        http.post("/v1/feedback", json={"id": canary[0], "score": -1})

    health = proxy.admin(REVIEWER_TOKEN).route_health(ALIAS)
    by_target = {t["target"]: t for t in health["targets"]}
    assert set(by_target) == {BASE, "fail-500"}
    assert by_target[BASE]["requests"] == len(stable) and by_target[BASE]["errors"] == 0
    assert by_target["fail-500"]["requests"] == len(canary)
    assert by_target["fail-500"]["error_rate"] == 1.0 and by_target["fail-500"]["candidate"]
    assert by_target[BASE]["feedback_mean"] == 1.0
    assert by_target[BASE]["feedback_count"] == len(stable)
    assert by_target["fail-500"]["feedback_mean"] == -1.0
    assert by_target[BASE]["latency_p50_ms"] > 0 and by_target[BASE]["share"] == 50.0
    assert health["promotion"]["model"] == "fail-500"
    later = proxy.admin().route_health(ALIAS, since="2999-01-01T00:00:00Z")
    assert later["targets"] == []


def test_cli_promote_and_rollback(proxy: ProxyServer, tmp_path: Path) -> None:
    start_route(proxy)
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    runner = CliRunner()
    db = ["--db", str(tmp_path / "cli.duckdb")]
    result = runner.invoke(main, [*db, "promote", "--alias", ALIAS, "--model", FT,
                                  "--canary", "10"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{BASE} 90%, {FT} 10%" in result.output
    result = runner.invoke(main, [*db, "rollback", "--alias", ALIAS], env=env)
    assert result.exit_code == 0, result.output
    assert proxy.admin().routes()[ALIAS]["targets"][0]["model"] == BASE
    reviewer_env = {"TUNELOOP_REVIEWER_TOKEN": REVIEWER_TOKEN, "TUNELOOP_API": proxy.url,
                    "TUNELOOP_ADMIN_TOKEN": None}
    result = runner.invoke(main, [*db, "rollback", "--alias", ALIAS, "--model", FT],
                           env=reviewer_env)  # --model: no "just rolled back" check first
    assert result.exit_code == Forbidden.exit_code and "admin token" in result.output


def test_health_counts_the_upstreams_4xx_not_the_proxys_own(proxy: ProxyServer) -> None:
    """A canary's upstream 4xx is its error when the stable target answered the request
    (r14b #1); a 4xx the proxy answered itself after routing (here: embeddings to a litellm
    provider, refused before any upstream call) says nothing about the target and is marked
    `answered_by: proxy` in the row's route."""
    proxy.admin().put_routes({
        "refused": {"targets": [{"model": BASE}]},
        "ours": {"targets": [{"model": "claude-3-5-haiku-20241022", "provider": "anthropic"}]},
    })
    proxy.admin().promote("refused", "refused-model", canary=50)
    proxy.upstream.state.fail_containing["refused-model"] = 404
    with proxy.http() as http:
        answered = [http.post("/v1/chat/completions", json={
            "model": "refused", "messages": [{"role": "user", "content": "hi"}],
            "user": f"user-{n}"}) for n in range(20)]
        ours = http.post("/v1/embeddings", json={"model": "ours", "input": "hi"})
    assert {r.status_code for r in answered} == {200} and ours.status_code == 400, ours.text
    proxy.wait_logged(21)
    routes = [tuple(r) for r in proxy.sql(
        "SELECT route->>'primary', route->>'role', route->>'primary_status', "
        "route->>'answered_by' FROM interactions")]
    refusals = [r for r in routes if r[0] == "refused-model"]
    assert refusals and all(r[1:] == ("second_opinion", "404", None) for r in refusals)
    assert ("claude-3-5-haiku-20241022", "primary", None, "proxy") in routes
    since = "2000-01-01T00:00:00Z"
    rows = {r["target"]: r for r in proxy.admin().route_health("refused", since=since)["targets"]}
    assert (rows["refused-model"]["requests"], rows["refused-model"]["errors"]) == (
        len(refusals), len(refusals))
    assert rows[BASE]["errors"] == 0
    [own] = proxy.admin().route_health("ours", since=since)["targets"]
    assert (own["requests"], own["errors"], own["unjudged_requests"]) == (0, 0, 1)


@pytest.mark.parametrize("share", [10, 60])
def test_a_canary_beside_an_open_canary_keeps_the_stable_target_whatever_the_weights(
        proxy: ProxyServer, share: int) -> None:
    # r14d #2: at 60% the open canary was taken for the stable target, so a person's canary
    # dropped the model the alias really served
    start_route(proxy)
    admin = proxy.admin()
    admin.promote(ALIAS, FT, canary=share)
    second = admin.promote(ALIAS, FT2, canary=10)
    assert [(t["model"], t["weight"]) for t in second["spec"]["targets"]] == [(BASE, 90),
                                                                            (FT2, 10)]
    state = admin.route_canary(ALIAS)
    assert (state["stable"], state["canary"]["model"]) == (BASE, FT2)
    # rolling the newer canary back re-opens the first, beside the same stable target
    admin.rollback(ALIAS)
    assert admin.route_canary(ALIAS)["canary"]["model"] == FT
    state = admin.route_canary(ALIAS)
    assert [(t["model"], t["weight"]) for t in state["route"]["targets"]] == [
        (BASE, 100 - share), (FT, share)]
    assert (state["stable"], state["canary"]["model"]) == (BASE, FT)
    # promoted fully, it is no canary any more: the alias serves it for sure
    admin.promote(ALIAS, FT)
    state = admin.route_canary(ALIAS)
    assert (state["stable"], state["canary"]) == (FT, None)


def test_a_canary_never_makes_an_open_canary_the_stable_model_nor_drops_a_split(
        proxy: ProxyServer) -> None:
    """r14e #2: `promote --model <stable> --canary 10` beside an open canary gave the untested
    canary 90%; r14e #7: a canary on a person's A/B split dropped one of its models."""
    start_route(proxy)
    admin = proxy.admin()
    admin.promote(ALIAS, FT, canary=10)
    with pytest.raises(Conflict, match=r"open canary of .* a canary of gpt-4o-mini would give"):
        admin.promote(ALIAS, BASE, canary=10)
    assert {t["model"]: t["weight"] for t in admin.routes()[ALIAS]["targets"]} == {
        BASE: 90, FT: 10}
    full = admin.promote(ALIAS, BASE)  # promoting the stable model fully ends the canary
    assert [t["model"] for t in full["spec"]["targets"]] == [BASE]
    assert FT not in [t["model"] for t in full["spec"]["fallbacks"]]  # untested: no fallback
    admin.put_routes({ALIAS: {"targets": [{"model": BASE, "weight": 50},
                                          {"model": SPARE, "weight": 50}]}},
                     expect_seq=admin.routes_with_seq()["seq"])
    with pytest.raises(Conflict, match="splits its traffic between"):
        admin.promote(ALIAS, FT, canary=10)
    assert {t["model"] for t in admin.routes()[ALIAS]["targets"]} == {BASE, SPARE}
