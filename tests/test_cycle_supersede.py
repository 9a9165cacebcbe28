"""One canary at a time on an alias, and none left unwatched (r14d #1-#3).

- A person's canary that supersedes the cycle's keeps the alias's stable model, even beside a
  60% cycle canary; rolling the person's back puts the cycle's canary back on the route, and
  the next run (or watcher) watches it before anything new instead of ending `unchanged`.
- A second cycle on the same alias never takes the first one's untested canary for the
  current model: it is evaluated against the stable model, waits at `canary` while the other
  canary is open, and is evaluated again when the alias's model changed meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cycle_steps import current_model
from exporter.cycle_watch import watch_canary
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_cycle import ALIAS, CURRENT, config, loop, run  # noqa: F401

pytestmark = both_stores

OTHER = "gpt-4o"  # a person's canary


def weights(proxy: ProxyServer) -> dict[str, float]:
    return {t["model"]: float(t.get("weight", 100)) for t in
            proxy.admin().routes()[ALIAS]["targets"]}


@pytest.mark.parametrize("percent", [10, 60])
def test_a_superseded_canary_put_back_by_a_rollback_is_watched_again(
        loop: ProxyServer, tmp_path: Path, percent: int) -> None:  # noqa: F811
    loop.upstream.state.model_replies[CURRENT] = "I don't know."
    cfg = config(tmp_path, canary={"percent": percent, "min_requests": 100})
    first = run(loop, cfg)
    assert first.run["step"] == "watch", first.message
    model = first.run["state"]["fine_tuned_model"]
    admin = loop.admin()
    admin.promote(ALIAS, OTHER, canary=10)
    # the stable model keeps the rest, whatever the cycle's canary weighed
    assert weights(loop) == {CURRENT: 90.0, OTHER: 10.0}
    superseded = run(loop, cfg)
    assert superseded.run["outcome"] == "superseded", superseded.message
    admin.rollback(ALIAS)
    assert weights(loop) == {CURRENT: 100.0 - percent, model: float(percent)}
    assert current_model(admin, cfg) == CURRENT
    jobs = len(loop.upstream.state.jobs)
    said: list[str] = []
    settling = run(loop, cfg, say=said.append)
    # on main: `unchanged`, and the canary stayed on the route with nobody watching it
    assert settling.status == "active" and settling.run["step"] == "watch", settling.message
    assert settling.run["state"]["settles"] == first.run["id"]
    assert any("put back by a rollback" in s for s in said), said
    # judged on the traffic since it came back, not since its first promotion
    assert settling.run["state"]["promoted_at"] > first.run["state"]["promoted_at"]
    assert len(loop.upstream.state.jobs) == jobs
    assert watch_canary(admin, cfg, api_key=UPSTREAM_KEY).status == "active"


def test_the_watcher_finds_a_superseded_canary_put_back(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    loop.upstream.state.model_replies[CURRENT] = "I don't know."
    cfg = config(tmp_path, canary={"percent": 10, "min_requests": 100})
    run(loop, cfg)
    admin = loop.admin()
    admin.promote(ALIAS, OTHER, canary=10)
    assert watch_canary(admin, cfg, api_key=UPSTREAM_KEY).run["outcome"] == "superseded"
    assert watch_canary(admin, cfg, api_key=UPSTREAM_KEY).status == "idle"
    admin.rollback(ALIAS)
    looked = watch_canary(admin, cfg, api_key=UPSTREAM_KEY)
    assert looked.status == "active" and looked.run["state"]["settles"], looked.message


def test_a_second_cycle_on_the_alias_waits_for_the_open_canary_and_judges_the_stable_model(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    loop.upstream.state.model_replies[CURRENT] = "I don't know."
    first = config(tmp_path, canary={"percent": 60, "min_requests": 100})
    second = config(tmp_path, name="support-b", finetune={"suffix": "suppb"},
                    dataset={"out_dir": str(tmp_path / "second")},
                    canary={"percent": 60, "min_requests": 100})
    opened = run(loop, first)
    assert opened.run["step"] == "watch", opened.message
    model = opened.run["state"]["fine_tuned_model"]
    # on main: the other cycle's untested 60% canary was taken for the current model
    assert current_model(loop.admin(), second) == CURRENT
    waiting = run(loop, second)
    assert waiting.run["state"]["baseline"] == CURRENT, waiting.message
    assert waiting.status == "active" and waiting.run["step"] == "canary", waiting.message
    assert f"open canary of {model}" in waiting.message
    assert weights(loop) == {CURRENT: 40.0, model: 60.0}  # the first canary untouched
    # the first model is promoted fully: the second is evaluated again, against it
    loop.admin().promote(ALIAS, model)
    again = run(loop, second)
    assert again.run["state"]["baseline"] == model, again.message
    assert again.status == "finished" and again.run["outcome"] == "not_promoted", again.message
    assert weights(loop) == {model: 100.0}
