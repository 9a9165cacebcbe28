"""A person settling the cycle's canary by hand (r14h #2): their full promotion of the
candidate ends the watch `promoted`, by them; the cycle never rolls it back (the stable model
gets no traffic any more, so the test could never decide and `max_hours` used to undo the
person's promotion). Real proxy, real store, the fake upstream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exporter.cycle_watch import watch_canary
from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_cycle import ALIAS, run
from tests.test_cycle_canary import ask, open_canary, wait_ingested
from tuneloop.client import AdminClient

loop = test_cycle.loop  # the fixture: approved traffic, the alias, fast fake fine-tuning


@pytest.mark.parametrize("max_hours", [0.001, 24])
def test_a_persons_full_promotion_of_the_canary_ends_the_watch_promoted(
        loop: ProxyServer, tmp_path: Path, max_hours: float) -> None:
    ask(loop, 60)  # the alias's traffic before the canary
    cfg, model = open_canary(loop, tmp_path, percent=10, max_hours=max_hours,
                             min_requests=100)
    person = AdminClient(loop.url, ADMIN_TOKEN, actor="alice")
    person.promote(ALIAS, model)  # `tuneloop promote --alias ... --model ft:...`: 100%
    ask(loop, 40, start=100)
    wait_ingested(loop, 100)
    if max_hours < 1:
        time.sleep(4)  # past max_hours (0.001 h = 3.6 s)
    outcome = run(loop, cfg)
    # on main: rolled back undecided at max_hours (or waiting forever), undoing the promotion
    assert outcome.status == "finished", outcome.message
    assert outcome.run["outcome"] == "promoted", outcome.message
    assert "alice" in outcome.message and "by hand" in outcome.message, outcome.message
    watch = [s for s in outcome.run["steps"] if s["step"] == "watch"][-1]
    assert watch["detail"]["promoted_by"] == "alice"
    assert [t["model"] for t in person.routes()[ALIAS]["targets"]] == [model]
    assert person.route_history(ALIAS)[0]["action"] == "promote"  # nothing after the person's


def test_the_watcher_ends_the_run_a_person_settled(loop: ProxyServer, tmp_path: Path) -> None:
    cfg, model = open_canary(loop, tmp_path, percent=10, max_hours=0.001, min_requests=100)
    person = AdminClient(loop.url, ADMIN_TOKEN, actor="bob")
    person.promote(ALIAS, model)
    time.sleep(4)
    outcome = watch_canary(loop.admin(), cfg, api_key=UPSTREAM_KEY)
    assert outcome.status == "finished" and outcome.run["outcome"] == "promoted", \
        outcome.message
    assert [t["model"] for t in person.routes()[ALIAS]["targets"]] == [model]
