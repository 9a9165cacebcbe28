"""A model is one arm of a canary whatever its deployments, and a drained model is still the
stable one (outside review #8, #9b, #10).

Two targets of one model at other base_urls (the stable model served by two providers) are
one stable arm: a canary keeps both; two of the canary model are one canary arm. Each
deployment of an arm gets its second opinion from the other arm. A stable model drained to
weight 0 beside an open canary stays the stable model (not the untested canary).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import ProxyServer

ALIAS = "support-bot"
STABLE, CANARY, OTHER = "stable-model", "canary-model", "other-model"


def weights(spec: dict[str, Any]) -> list[tuple[str, str | None, float]]:
    return [(t["model"], t.get("base_url"), t["weight"]) for t in spec["targets"]]


def ask(proxy: ProxyServer, users: int) -> list[str | int]:
    """One chat request per sticky user: the model that answered (as the store says: the
    answer names the alias while a canary is open), or the refusal's status."""
    client = proxy.openai().with_options(max_retries=0)
    seen: list[str | int] = []
    for n in range(users):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=ALIAS, user=f"user-{n}", messages=[{"role": "user", "content": "hi"}])
            assert raw.parse().model == ALIAS
            seen.append(proxy.row(raw.headers["x-tuneloop-id"])["upstream_model"])
        except openai.APIStatusError as exc:
            seen.append(exc.status_code)
    return seen


def health(proxy: ProxyServer, count: int) -> dict[str, dict[str, Any]]:
    proxy.wait_for(f"SELECT count(*) FROM interactions WHERE model = '{ALIAS}'",
                   lambda r: r[0][0] >= count)
    rows = proxy.admin().route_health(ALIAS, since="2000-01-01T00:00:00Z")["targets"]
    return {r["target"]: r for r in rows}


@pytest.mark.parametrize("canary_weight", [10, 100])
def test_a_stable_model_drained_to_weight_0_stays_the_stable_model(
        proxy: ProxyServer, canary_weight: int) -> None:
    """#8: with the stable model at weight 0 beside an open canary, `/canary` (and the cycle's
    `current_model`, its gate's baseline, a new promotion) took the canary for the stable
    model."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=10)
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE, "weight": 0},
                                          {"model": CANARY, "weight": canary_weight}]}}, force=True)
    state = admin.route_canary(ALIAS)
    assert (state["stable"], state["canary"]["model"]) == (STABLE, CANARY)  # main: CANARY
    # a weight-0 model is nobody's second opinion: the canary's refusal reaches the app, and
    # (nothing to compare it with) it is the canary's error, as before
    proxy.upstream.state.fail_containing[CANARY] = 404
    assert set(ask(proxy, 5)) == {404}
    rows = health(proxy, 5)
    assert rows[CANARY]["errors"] == rows[CANARY]["requests"] == 5
    assert STABLE not in rows
    # a full promotion of another model keeps the stable model (not the canary) as fallback
    full = admin.promote(ALIAS, OTHER, previous_as_fallback=True)
    assert [t["model"] for t in full["spec"]["fallbacks"]] == [STABLE]


def test_a_new_canary_beside_a_drained_stable_model_is_compared_with_it(
        proxy: ProxyServer) -> None:
    """#8: the new canary was refused (the open canary taken for the stable model)."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=10)
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE, "weight": 0},
                                          {"model": CANARY, "weight": 10}]}}, force=True)
    second = admin.promote(ALIAS, OTHER, canary=10)
    assert weights(second["spec"]) == [(STABLE, None, 90), (OTHER, None, 10)]
    assert admin.route_canary(ALIAS)["stable"] == STABLE


def test_two_deployments_of_the_stable_model_are_one_stable_arm(proxy: ProxyServer) -> None:
    """#9b, #10: a canary beside the stable model served at two base_urls dropped the second
    one (the route kept only the heaviest), and the second's refusals got no second
    opinion."""
    admin, there = proxy.admin(), proxy.upstream.base_url
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE, "weight": 50},
                                          {"model": STABLE, "base_url": there,
                                           "weight": 50}]}})
    canary = admin.promote(ALIAS, CANARY, canary=20)
    assert weights(canary["spec"]) == [(STABLE, None, 40), (STABLE, there, 40),
                                       (CANARY, None, 20)]
    assert admin.route_canary(ALIAS)["stable"] == STABLE
    proxy.upstream.state.fail_containing[STABLE] = 429  # both deployments rate limited
    assert set(ask(proxy, 30)) == {CANARY}
    rows = health(proxy, 30)
    assert rows[STABLE]["share"] == 80  # the arm's share, all its deployments
    assert rows[STABLE]["requests"] and rows[STABLE]["error_rate"] == 1.0
    full = admin.promote(ALIAS, CANARY)  # both deployments stay as fallbacks
    assert [(t["model"], t.get("base_url")) for t in full["spec"]["fallbacks"]] == [
        (STABLE, None), (STABLE, there)]


def test_two_deployments_of_the_canary_model_are_one_canary_arm(proxy: ProxyServer) -> None:
    """#10: a refusal of the canary's second deployment reached the app (only the first had
    the stable model's second opinion); a new share or a full promotion dropped it."""
    admin, there = proxy.admin(), proxy.upstream.base_url
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE, "weight": 50},
                                          {"model": CANARY, "weight": 25},
                                          {"model": CANARY, "base_url": there, "weight": 25}]}},
                     force=True)
    assert admin.route_canary(ALIAS)["canary"]["model"] == CANARY
    proxy.upstream.state.fail_containing[CANARY] = 404  # the fine-tune was deleted
    assert set(ask(proxy, 30)) == {STABLE}
    rows = health(proxy, 30)
    assert rows[CANARY]["requests"] and rows[CANARY]["error_rate"] == 1.0
    assert rows[STABLE]["errors"] == 0
    smaller = admin.promote(ALIAS, CANARY, canary=20)
    assert weights(smaller["spec"]) == [(STABLE, None, 80), (CANARY, None, 10),
                                        (CANARY, there, 10)]
    full = admin.promote(ALIAS, CANARY)
    assert weights(full["spec"]) == [(CANARY, None, 50), (CANARY, there, 50)]
