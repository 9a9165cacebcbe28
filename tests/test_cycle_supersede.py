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
from click.testing import CliRunner

from exporter.cycle_steps import current_model
from exporter.cycle_watch import watch_canary
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_cycle import ALIAS, CURRENT, config, loop, run  # noqa: F401
from tuneloop.cli import main
from tuneloop.errors import Conflict

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
    # blocked: it waits on something a person must settle (`tuneloop cycle` exits 9)
    assert waiting.status == "blocked" and waiting.run["step"] == "canary", waiting.message
    assert f"open canary of {model}" in waiting.message
    assert weights(loop) == {CURRENT: 40.0, model: 60.0}  # the first canary untouched
    # the first model is promoted fully: the second is evaluated again, against it
    loop.admin().promote(ALIAS, model)
    again = run(loop, second)
    assert again.run["state"]["baseline"] == model, again.message
    assert again.status == "finished" and again.run["outcome"] == "not_promoted", again.message
    assert weights(loop) == {model: 100.0}


def test_a_run_does_not_go_on_under_a_config_for_another_alias(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14e #8: a config copied with the same `name` for another alias (or edited mid-run)
    took over the active run: its support-data model opened a canary on billing-bot."""
    loop.upstream.state.finetune_step_seconds = 1000  # the job trains on: the run waits
    first = run(loop, config(tmp_path, finetune={"wait_timeout_minutes": 0.001}))
    assert first.status == "active" and first.run["step"] == "wait", first.message
    loop.admin().put_routes({"billing-bot": {"targets": [{"model": CURRENT}]}}, force=True)
    with pytest.raises(Conflict, match="started with another config: alias 'support-bot' -> "
                                       "'billing-bot'"):
        run(loop, config(tmp_path, alias="billing-bot", finetune={"wait_timeout_minutes": 0.001}))
    assert [t["model"] for t in loop.admin().routes()["billing-bot"]["targets"]] == [CURRENT]


def test_a_canary_on_a_split_route_blocks_the_cycle_visibly(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14e #7, #9: a person's A/B split (or canary) holds the cycle at `canary`: it says so
    and `tuneloop cycle` exits 9 instead of 0, so a scheduler notices."""
    loop.upstream.state.model_replies[CURRENT] = "I don't know."
    loop.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT, "weight": 50},
                                                 {"model": OTHER, "weight": 50}]}},
                            expect_seq=loop.admin().routes_with_seq()["seq"])
    cfg = config(tmp_path)
    blocked = run(loop, cfg)
    assert blocked.status == "blocked" and blocked.run["step"] == "canary", blocked.message
    assert "splits its traffic between" in blocked.message
    assert weights(loop) == {CURRENT: 50.0, OTHER: 50.0}  # on main: OTHER dropped
    path = tmp_path / "cycle.toml"
    path.write_text(f"""name = "support"\nalias = "{ALIAS}"\n[dataset]\nname = "support"
validation = 0.3\nout_dir = "{tmp_path / 'exports'}"\n[finetune]
base_model = "gpt-4o-mini-2024-07-18"\nsuffix = "support"\npoll_seconds = 0.02
hyperparameters = {{n_epochs = 2}}\n[evaluate]\nmargin = 0.1\nmin_decided = 5
min_discordant = 5\n[canary]\npercent = 50\nmin_requests = 5\nmin_feedback = 3
bad_error_rate_increase = 0.3\n""")
    printed = CliRunner().invoke(main, ["cycle", "--config", str(path), "--api", loop.url],
                                 env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert printed.exit_code == 9, printed.output
    assert "blocked" in printed.output
