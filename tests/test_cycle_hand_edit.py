"""The cycle never overrides a person's edit of the route made during its canary (r14f #6),
rolls a bad canary back onto that edit (r14f #5), and decides on the route it read or not at
all (the `expect_seq` guard): real proxy, real store, the fake upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from exporter.cycle_watch import watch_canary
from tests import test_cycle
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_cycle import ALIAS, CURRENT, run
from tests.test_cycle_canary import ask, open_canary, wait_ingested

pytestmark = both_stores
loop = test_cycle.loop  # the fixture: approved traffic, the alias, fast fake fine-tuning

OTHER = "gpt-4o"  # the model of a person's A/B split


def weights(proxy: ProxyServer) -> dict[str, float]:
    return {t["model"]: float(t.get("weight", 100)) for t in
            proxy.admin().routes()[ALIAS]["targets"]}


def split_the_stable_arm(proxy: ProxyServer, model: str) -> None:
    """A person's hand edit during the canary: the stable 50% becomes an A/B split."""
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT, "weight": 25},
                                                  {"model": OTHER, "weight": 25},
                                                  {"model": model, "weight": 50}]}}, force=True)


def until_settled(proxy: ProxyServer, cfg: Any, most: int = 400) -> Any:
    sent, outcome = 0, None
    while sent < most:
        ask(proxy, 40, start=sent)
        sent += 40
        wait_ingested(proxy, sent)
        outcome = run(proxy, cfg)
        if outcome.status != "active":
            break
    return outcome


def test_a_good_canary_is_not_promoted_over_a_hand_edit(loop: ProxyServer,
                                                        tmp_path: Path) -> None:
    cfg, model = open_canary(loop, tmp_path, min_requests=20)
    split_the_stable_arm(loop, model)
    loop.upstream.state.model_error_rate[CURRENT] = 0.2  # the canary is clearly no worse
    outcome = until_settled(loop, cfg)
    # on main: promoted fully, the person's split dropped without anyone deciding that
    assert outcome.status == "blocked" and outcome.run["step"] == "watch", outcome.message
    assert "edited by hand during the canary" in outcome.message
    assert f"tuneloop promote --alias {ALIAS} --model {model}" in outcome.message
    assert weights(loop) == {CURRENT: 25.0, OTHER: 25.0, model: 50.0}
    looked = watch_canary(loop.admin(), cfg, api_key=UPSTREAM_KEY)
    assert looked.status == "blocked", looked.message
    # the person settles it: the rollback takes the canary out and keeps the split
    loop.admin().rollback(ALIAS)
    assert weights(loop) == {CURRENT: 50.0, OTHER: 50.0}
    settled = run(loop, cfg)
    assert settled.run["id"] == outcome.run["id"], settled.message
    assert settled.run["outcome"] == "superseded", settled.message


def test_a_bad_canary_is_rolled_back_onto_the_hand_edit(loop: ProxyServer,
                                                        tmp_path: Path) -> None:
    cfg, model = open_canary(loop, tmp_path)
    split_the_stable_arm(loop, model)
    loop.upstream.state.model_error_rate[model] = 0.3
    outcome = until_settled(loop, cfg)
    assert outcome.status == "finished" and outcome.run["outcome"] == "rolled_back", \
        outcome.message
    # on main: back to CURRENT 100, the split undone
    assert weights(loop) == {CURRENT: 50.0, OTHER: 50.0}
    latest = loop.admin().route_history(ALIAS)[0]
    assert latest["action"] == "rollback" and latest["detail"]["rebuilt"] is True
    assert latest["detail"]["verdict"]["verdict"] == "rollback"


def test_a_promotion_between_the_read_and_the_decision_is_not_undone(
        loop: ProxyServer, tmp_path: Path) -> None:
    """A person promotes another canary right after the watch read the route's health: the
    cycle's full promotion, decided on the older route, is refused instead of dropping it."""
    cfg, _ = open_canary(loop, tmp_path, min_requests=20)
    loop.upstream.state.model_error_rate[CURRENT] = 0.2
    ask(loop, 160)
    wait_ingested(loop, 160)
    person = loop.admin()
    cycle = loop.admin()
    acted: list[str] = []

    def a_person_acts(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/health") and not acted:
            acted.append(person.promote(ALIAS, OTHER, canary=10)["model"])

    cycle._http.event_hooks["response"].append(a_person_acts)
    looked = watch_canary(cycle, cfg, api_key=UPSTREAM_KEY)
    assert acted == [OTHER]
    # on main: `finished`, promoted over the person's canary of OTHER
    assert looked.status == "blocked", looked.message
    assert "changed since it was read" in looked.message
    assert weights(loop) == {CURRENT: 90.0, OTHER: 10.0}
    # the next look reads the route again and decides on it: the person's canary supersedes
    again = watch_canary(person, cfg, api_key=UPSTREAM_KEY)
    assert again.run["outcome"] == "superseded", again.message
    assert weights(loop) == {CURRENT: 90.0, OTHER: 10.0}
