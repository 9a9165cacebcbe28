"""The canary's sequential test and the cycle watching an open canary, on a real proxy with
the fake OpenAI upstream: which model the alias serves afterwards is the evidence."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from exporter.cycle_watch import run_schedule, watch_canary
from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_cycle import ALIAS, CURRENT, config, reached, run
from tuneloop.cli import main

pytestmark = both_stores
loop = test_cycle.loop  # the fixture: approved traffic, the alias, fast fake fine-tuning


def ask(proxy: ProxyServer, count: int, start: int = 0) -> None:
    """`count` alias requests; 5xx answers (the canary's errors) are expected."""
    client = proxy.openai()
    for n in range(start, start + count):
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": f"Where is order {n}?"}])


def canary_requests(proxy: ProxyServer, model: str) -> int:
    rows = proxy.sql("SELECT count(*) FROM interactions WHERE traffic = 'production' AND "
                     f"route->>'primary' = '{model}'")
    return int(rows[0][0])


def wait_ingested(proxy: ProxyServer, count: int) -> None:
    proxy.wait_for(f"SELECT count(*) FROM interactions WHERE model = '{ALIAS}'",
                   lambda r: r[0][0] >= count)


def open_canary(proxy: ProxyServer, tmp_path: Path, **canary: Any) -> tuple[Any, str]:
    proxy.upstream.state.model_replies[CURRENT] = "I don't know."  # the candidate wins the eval
    cfg = config(tmp_path, canary={"percent": 50, "min_requests": 100, "min_feedback": 10,
                                   "bad_error_rate_increase": 0.05, **canary})
    first = run(proxy, cfg)
    assert first.run["step"] == "watch", first.message
    return cfg, first.run["state"]["fine_tuned_model"]


def until_decided(proxy: ProxyServer, cfg: Any, send_batch: Callable[[int], object],
                  batch: int, most: int, logged: int = 0) -> Any:
    """Send a batch (`send_batch(number of the batch's first request)`), let it be logged
    (after the `logged` rows already there) and run the cycle, until the canary is decided or
    `most` requests were sent; the last outcome."""
    sent, outcome = 0, None
    while sent < most:
        send_batch(sent)
        sent += batch
        wait_ingested(proxy, logged + sent)
        outcome = run(proxy, cfg)
        if outcome.status == "finished":
            break
    return outcome


def test_a_canary_failing_30_percent_is_rolled_back_within_its_first_100_requests(
        loop: ProxyServer, tmp_path: Path) -> None:
    cfg, model = open_canary(loop, tmp_path)  # min_requests 100: the old verdict waited for it
    loop.upstream.state.model_error_rate[model] = 0.3
    outcome = until_decided(loop, cfg, lambda start: ask(loop, 10, start=start), 10, 200)
    assert outcome is not None and outcome.run["outcome"] == "rolled_back", outcome
    assert canary_requests(loop, model) < 100
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
    latest = loop.admin().route_history(ALIAS)[0]
    assert latest["action"] == "rollback"
    [errors, _] = latest["detail"]["verdict"]["tests"]
    assert errors["metric"] == "errors" and errors["decision"] == "worse"
    assert errors["llr"] >= errors["upper"] and errors["canary_events"] >= 2
    printed = CliRunner().invoke(main, ["routes", "history", "--alias", ALIAS, "--api",
                                        loop.url], env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert printed.exit_code == 0, printed.output
    assert "verdict rollback (sprt2)" in printed.output and "errors: canary" in printed.output


def test_an_even_canary_keeps_running(loop: ProxyServer, tmp_path: Path) -> None:
    cfg, model = open_canary(loop, tmp_path, min_requests=5)
    loop.upstream.state.model_error_rate.update({model: 0.1, CURRENT: 0.1})
    ask(loop, 40)
    wait_ingested(loop, 40)
    outcome = run(loop, cfg)
    assert outcome.status == "active" and outcome.run["step"] == "watch", outcome.message
    assert "undecided" in outcome.message
    assert {t["model"] for t in loop.admin().routes()[ALIAS]["targets"]} == {CURRENT, model}
    assert loop.admin().route_history(ALIAS)[0]["detail"]["canary"] == 50


def test_the_watcher_promotes_a_clearly_better_canary_before_the_next_run(
        loop: ProxyServer, tmp_path: Path) -> None:
    """`cycle --every 1h` watches between runs: the canary is promoted as soon as the test
    decides, not an hour later."""
    cfg, model = open_canary(loop, tmp_path, min_requests=20, watch_seconds=1)
    loop.upstream.state.model_error_rate[CURRENT] = 0.2  # the current model fails, not the canary
    runs, looks = [], []
    stop = threading.Event()
    admin = loop.admin()

    def look() -> None:
        looks.append(watch_canary(admin, cfg, api_key=UPSTREAM_KEY))

    schedule = threading.Thread(target=run_schedule, kwargs={
        "run_once": lambda: runs.append(run(loop, cfg)), "watch_once": look,
        "interval_s": 3600.0, "watch_s": cfg.canary.watch_seconds, "stop": stop})
    schedule.start()
    try:
        # traffic only after the scheduled run looked (on a loaded machine a late run would
        # see the traffic and decide itself, leaving the watcher "no open canary")
        started = time.monotonic() + 60
        while not runs and time.monotonic() < started:
            time.sleep(0.05)
        assert runs and runs[0].status == "active", runs
        ask(loop, 120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(o.status == "finished" for o in looks):
            time.sleep(0.05)
    finally:
        stop.set()
        schedule.join()
    assert len(runs) == 1  # the scheduled run happened once; the watcher decided
    decided = [o for o in looks if o.status == "finished"]
    assert decided and decided[0].run["outcome"] == "promoted", looks[-1:]
    spec = loop.admin().routes()[ALIAS]
    assert [(t["model"], t["weight"]) for t in spec["targets"]] == [(model, 100)]
    latest = loop.admin().route_history(ALIAS)[0]
    assert latest["action"] == "promote" and latest["detail"]["canary"] == 100
    assert latest["detail"]["verdict"]["verdict"] == "promote"
    mark = len(loop.upstream.state.requests)
    ask(loop, 5, start=500)
    assert reached(loop, mark) == {model: 5}


def test_one_watcher_at_a_time(loop: ProxyServer, tmp_path: Path) -> None:
    cfg, _ = open_canary(loop, tmp_path)
    loop.admin().acquire_cycle_lease(cfg.name, "other-host", 60)
    assert watch_canary(loop.admin(), cfg).status == "busy"
    loop.admin().release_cycle_lease(cfg.name, "other-host")
    assert watch_canary(loop.admin(), cfg).status == "active"


def test_run_schedule_watches_between_runs() -> None:
    now = [0.0]
    calls: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        calls.append(f"watch@{now[0]:g}")
        now[0] += 1.0
        if now[0] >= 7:
            stop.set()

    def once() -> None:
        calls.append(f"run@{now[0]:g}")

    run_schedule(once, watch, interval_s=3.5, watch_s=1e-3, stop=stop, clock=lambda: now[0])
    assert calls[:6] == ["run@0", "watch@0", "watch@1", "watch@2", "watch@3", "run@4"]


def canary_bound_user(proxy: ProxyServer, model: str) -> str:
    """A user id whose first request the route sent to the canary (the probes are not
    logged: they count for neither target)."""
    client = proxy.openai()
    for n in range(400):
        mark = len(proxy.upstream.state.requests)
        client.chat.completions.create(
            model=ALIAS, user=f"backend-{n}", extra_headers={"x-tuneloop-no-log": "1"},
            messages=[{"role": "user", "content": f"Where is parcel {n}?"}])
        if reached(proxy, mark) == {model: 1}:
            return f"backend-{n}"
    raise AssertionError("no user landed on the canary")


def test_a_broken_canary_is_rolled_back_when_a_constant_user_starves_the_baseline(
        loop: ProxyServer, tmp_path: Path) -> None:
    """An app sending one constant body `user` (its backend) to a sticky split: every request
    went to the canary, the current target got none, and a canary failing all of them stayed
    at `continue` for ever (LLR +0.00), holding the cycle at `watch`."""
    ask(loop, 30, start=1000)  # the alias's traffic before the canary: the baseline's history
    wait_ingested(loop, 30)
    cfg, model = open_canary(loop, tmp_path, percent=10)
    user = canary_bound_user(loop, model)
    loop.upstream.state.model_error_rate[model] = 1.0
    client = loop.openai()
    for n in range(40):
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(
                model=ALIAS, user=user, messages=[{"role": "user", "content": f"Order {n}?"}])
    loop.wait_for(f"SELECT count(*) FROM interactions WHERE user_id = '{user}'",
                  lambda r: r[0][0] >= 40)
    outcome = run(loop, cfg)
    assert outcome.status == "finished" and outcome.run["outcome"] == "rolled_back", \
        outcome.message
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
    latest = loop.admin().route_history(ALIAS)[0]
    assert latest["action"] == "rollback"
    assert latest["detail"]["verdict"]["tests"][0]["decision"] == "worse"


def test_a_canary_undecided_at_max_hours_is_rolled_back_with_the_reason(
        loop: ProxyServer, tmp_path: Path) -> None:
    """No traffic at all reaches the canary: it used to wait at `watch` for ever, and every
    later run of the cycle waited behind it."""
    cfg, model = open_canary(loop, tmp_path, max_hours=24)
    assert run(loop, cfg).run["step"] == "watch"  # undecided, young: still watched
    expired = config(tmp_path, canary={**cfg.canary.model_dump(), "max_hours": 1e-9})
    outcome = run(loop, expired)
    assert outcome.status == "finished" and outcome.run["outcome"] == "rolled_back", \
        outcome.message
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
    latest = loop.admin().route_history(ALIAS)[0]
    assert latest["action"] == "rollback" and latest["detail"]["model"] == model
    [reason, *_] = latest["detail"]["verdict"]["reasons"]
    assert "max_hours" in reason and "safe side" in reason
    printed = CliRunner().invoke(main, ["routes", "history", "--alias", ALIAS, "--api",
                                        loop.url], env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert printed.exit_code == 0, printed.output
    assert "why: undecided after" in printed.output
    assert run(loop, cfg).run.get("id") != outcome.run["id"]  # the loop goes on


def test_a_starved_baseline_is_judged_against_its_traffic_before_the_canary(
        loop: ProxyServer, tmp_path: Path) -> None:
    """A 90% canary failing everything: beside it the current target got a request or two,
    too few to compare with, so the test reads the current target's 30 requests on the alias
    before the promotion (the watch asks the health API for that window)."""
    ask(loop, 30, start=2000)
    wait_ingested(loop, 30)
    cfg, model = open_canary(loop, tmp_path, percent=90)
    loop.upstream.state.model_error_rate[model] = 1.0
    ask(loop, 20, start=3000)
    wait_ingested(loop, 50)
    outcome = run(loop, cfg)
    assert outcome.status == "finished" and outcome.run["outcome"] == "rolled_back", \
        outcome.message
    errors = loop.admin().route_history(ALIAS)[0]["detail"]["verdict"]["tests"][0]
    assert errors["baseline"] == "history" and errors["baseline_n"] == 30, errors
    assert errors["decision"] == "worse"


def ask_refused(proxy: ProxyServer, count: int, start: int = 0) -> int:
    """`count` alias requests, where 4xx and 5xx answers are expected: how many were refused."""
    client, refused = proxy.openai(), 0
    for n in range(start, start + count):
        try:
            client.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": f"Where is order {n}?"}])
        except openai.APIStatusError:
            refused += 1
    return refused


@pytest.mark.parametrize("status", [400, 404])
def test_a_canary_refusing_every_request_with_a_4xx_is_rolled_back(
        loop: ProxyServer, tmp_path: Path, status: int) -> None:
    """A deleted, undeployed or parameter-refusing fine-tune answers 4xx to every request: the
    upstream's 4xx answers are the canary's errors (they were not: promoted, r14b #1)."""
    cfg, model = open_canary(loop, tmp_path, percent=10)
    loop.upstream.state.fail_containing[model] = status
    outcome = until_decided(loop, cfg, lambda start: ask_refused(loop, 50, start=start), 50, 600)
    assert outcome is not None and outcome.run["outcome"] == "rolled_back", outcome.message
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
    errors = loop.admin().route_history(ALIAS)[0]["detail"]["verdict"]["tests"][0]
    assert errors["metric"] == "errors" and errors["decision"] == "worse"


def test_4xx_answers_for_every_target_do_not_roll_the_canary_back(
        loop: ProxyServer, tmp_path: Path) -> None:
    """An app's bad requests (here, every one) are refused by both arms alike: no rollback,
    and no error of either (the canary's refusals got a refusing second opinion)."""
    cfg, model = open_canary(loop, tmp_path, min_requests=5)
    loop.upstream.state.fail_containing["Where is order"] = 400
    assert ask_refused(loop, 200) == 200
    wait_ingested(loop, 200)
    outcome = run(loop, cfg)
    assert outcome.run.get("outcome") != "rolled_back", outcome.message
    assert model in {t["model"] for t in loop.admin().routes()[ALIAS]["targets"]}
    rows = loop.admin().route_health(ALIAS, since="2000-01-01T00:00:00Z")["targets"]
    assert rows and all(r["unjudged_requests"] and (r["requests"], r["errors"]) == (0, 0)
                        for r in rows), rows


def test_a_fine_tune_failing_its_sticky_users_after_their_first_request_is_rolled_back(
        loop: ProxyServer, tmp_path: Path) -> None:
    """Sticky users each get one answer from the canary, then it is deleted (404 from then on,
    as for follow-up turns it refuses). Every 4xx counts, not only a user's first: a rule
    counting only the first one (tried, reverted) promoted this canary to 100%."""
    cfg, model = open_canary(loop, tmp_path, percent=50, min_requests=20)
    client, users = loop.openai(), [f"user-{n}" for n in range(40)]
    for user in users:
        client.chat.completions.create(model=ALIAS, user=user,
                                       messages=[{"role": "user", "content": "Where is it?"}])
    wait_ingested(loop, len(users))
    loop.upstream.state.fail_containing[model] = 404

    def follow_ups(start: int) -> None:
        for user in users:
            with contextlib.suppress(openai.APIStatusError):
                client.chat.completions.create(
                    model=ALIAS, user=user,
                    messages=[{"role": "user", "content": f"And then {start}?"}])

    outcome = until_decided(loop, cfg, follow_ups, len(users), 6 * len(users),
                            logged=len(users))
    assert outcome is not None and outcome.run["outcome"] == "rolled_back", outcome.message
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
