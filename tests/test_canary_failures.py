"""Failures the canary's health must judge fairly (r14h #1, #3).

A request that fails on every model (a 5xx or a timeout both arms give) says nothing of the
model it was drawn for: each arm's failure gets the other's second opinion, and a request
both fail is judged for nobody, so an app key steering such requests to one arm's users can
neither roll back an even canary nor get a bad one promoted. Fallbacks still serve the app.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import openai
import pytest

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests.conftest import ProxyServer
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app

ALIAS = "support-bot"
STABLE, CANARY = "stable-model", "canary-model"
SINCE = "2000-01-01T00:00:00Z"
HI = [{"role": "user", "content": "hi"}]


def health(proxy: ProxyServer, count: int) -> dict[str, dict[str, Any]]:
    """The alias's health once `count` requests are logged and every background second
    opinion they asked (proxy/background_opinion.py) logged its row."""
    proxy.wait_for(f"SELECT count(*) FROM interactions WHERE model = '{ALIAS}' "
                   "AND traffic = 'production'", lambda r: r[0][0] >= count)
    proxy.wait_for("SELECT (SELECT count(*) FROM interactions WHERE route ->> 'late_opinion' "
                   "= 'asked') - (SELECT count(*) FROM interactions WHERE traffic = 'probe')",
                   lambda r: r[0][0] <= 0)
    rows = proxy.admin().route_health(ALIAS, since=SINCE)["targets"]
    return {r["target"]: r for r in rows}


def users_on(proxy: ProxyServer, client: openai.OpenAI, arm: str, wanted: int,
             prefix: str) -> tuple[list[str], int]:
    """Users the draw puts on `arm`, as an attacker learns them (here from the store, which
    holds whatever side channel tells the arm); and how many requests that took."""
    sent, users = 0, []
    while len(users) < wanted:
        batch = [f"{prefix}{sent + n}" for n in range(20)]
        for user in batch:
            client.chat.completions.create(model=ALIAS, user=user, messages=HI)
        sent += len(batch)
        rows = proxy.wait_for(
            f"SELECT user_id, route ->> 'primary' FROM interactions WHERE model = '{ALIAS}' "
            f"AND user_id LIKE '{prefix}%'", lambda r, n=sent: len(r) >= n)
        users = sorted(user for user, primary in rows if primary == arm)[:wanted]
    return users, sent


@pytest.mark.parametrize("poison", [{"x-fake-fail": "500"}, {"x-fake-delay-ms": "600"}],
                         ids=["5xx", "timeout"])
def test_failures_every_model_gives_do_not_roll_an_even_canary_back(
        proxy: ProxyServer, poison: dict[str, str]) -> None:
    """Both arms healthy; an app key sends 5 requests every model fails (a 5xx, or a slow
    generation past the route's read timeout) for each of 12 users it saw land on the
    canary: on main they were the canary's errors and rolled it back."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}], "read_timeout_s": 0.3}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(timeout=20).with_options(max_retries=0)
    canary_users, sent = users_on(proxy, client, CANARY, 12, "a")
    failed = 0
    for user in canary_users:
        for _ in range(5):
            try:
                client.chat.completions.create(model=ALIAS, user=user, messages=HI,
                                               extra_headers=poison)
            except openai.APIError:
                failed += 1
            sent += 1
    assert failed == 60  # the app still gets the failure (no model answered)
    rows = health(proxy, sent)
    assert rows[CANARY]["errors"] == 0 and rows[STABLE]["errors"] == 0, rows
    assert rows[CANARY]["unjudged_requests"] == 60, rows
    verdict = judge_canary(rows[CANARY], rows[STABLE], CanaryConfig(), timedelta(hours=1))
    assert verdict.verdict != "rollback", verdict.reasons


def test_a_bad_canary_is_not_helped_by_failures_sent_to_the_stable_arm(
        proxy: ProxyServer) -> None:
    """The canary fails 20% of honest requests with a 5xx; an app key sends 5 requests every
    model 5xxs for each of 30 users on the stable arm. On main those were the stable model's
    errors (and got the bad canary promoted); a stable-arm 5xx had no second opinion."""
    bad = FakeOpenAIState()
    bad.fail_containing["crash"] = 500
    with serve_app(create_fake_openai(bad)) as bad_url:
        admin = proxy.admin()
        admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
        admin.promote(ALIAS, CANARY, canary=50, base_url=bad_url + "/v1")
        client = proxy.openai(timeout=20).with_options(max_retries=0)
        stable_users, sent = users_on(proxy, client, STABLE, 30, "a")
        for user in stable_users:
            for _ in range(5):
                with contextlib.suppress(openai.APIError):
                    client.chat.completions.create(model=ALIAS, user=user, messages=HI,
                                                   extra_headers={"x-fake-fail": "500"})
                sent += 1
        for n in range(200):  # honest users: the stable model answers the canary's failures
            text = "crash" if n % 5 == 0 else "hello"
            client.chat.completions.create(model=ALIAS, user=f"h{n}",
                                           messages=[{"role": "user", "content": text}])
            sent += 1
        rows = health(proxy, sent)
    assert rows[STABLE]["errors"] == 0, rows
    assert rows[STABLE]["unjudged_requests"] == 150, rows
    assert rows[CANARY]["errors"] > 0, rows
    verdict = judge_canary(rows[CANARY], rows[STABLE], CanaryConfig(), timedelta(hours=1))
    assert verdict.verdict != "promote", verdict.reasons


def test_fallbacks_serve_a_request_both_arms_fail_and_nobody_is_charged(
        proxy: ProxyServer) -> None:
    """A stable-arm 5xx now goes to the canary first; when the canary fails too, the
    route's fallback still answers the app, and the request is judged for neither arm."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": "fail-500"}],
                              "fallbacks": [{"model": "backup-model"}]}})
    admin.promote(ALIAS, "fail-502", canary=50)
    client = proxy.openai().with_options(max_retries=0)
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=HI) for n in range(20)]
    assert {a.status_code for a in answers} == {200}
    rows = health(proxy, 20)
    assert all(r["errors"] == 0 and r["requests"] == 0 for r in rows.values()), rows
    routes = proxy.sql("SELECT DISTINCT upstream_model, route ->> 'role', "
                       "route ->> 'second_opinion_status' FROM interactions")
    assert sorted(routes) == [["backup-model", "fallback", "500"],
                              ["backup-model", "fallback", "502"]], routes


def test_a_stable_arm_timeout_is_answered_by_the_canary_and_is_the_stable_models_error(
        proxy: ProxyServer) -> None:
    """Symmetric with the canary's: a stable model timing out where the canary answers is the
    stable model's error, and the app gets the canary's answer (on main: a 504)."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": "slow-3000"}], "read_timeout_s": 0.5}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(timeout=20).with_options(max_retries=0)
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=HI) for n in range(16)]
    assert {a.status_code for a in answers} == {200}
    rows = health(proxy, 16)
    assert rows["slow-3000"]["requests"] and rows["slow-3000"]["error_rate"] == 1.0, rows
    assert rows[CANARY]["errors"] == 0, rows
