"""A canary's 4xx gets a second opinion from the stable model (r14d #4).

A refusal only the untested model gave never reaches the app (the stable model answers it),
and it is the canary's error; a request both refuse is the request's fault, no error of
either arm. So refusals that cluster on a few sticky users, or that a client sends on purpose
to the arm it reads in the response's `model`, cannot roll an even canary back.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import test_cycle
from tests.conftest import ProxyServer, both_stores
from tests.test_canary_failures import health
from tests.test_cycle import ALIAS, CURRENT, run
from tests.test_cycle_canary import open_canary, wait_ingested

pytestmark = both_stores
loop = test_cycle.loop  # the fixture: approved traffic, the alias, fast fake fine-tuning

BROKEN = "BROKEN-REQUEST"  # every model refuses a body holding it


def answer_arm(proxy: ProxyServer, raw: Any) -> str:
    """The model that gave a raw answer, as the store says (the answer names the alias while
    a canary is open: proxy/arm_cover.py)."""
    model: str = proxy.row(raw.headers["x-tuneloop-id"])["upstream_model"]
    return model


def answered_by(proxy: ProxyServer, answers: list[Any]) -> set[str]:
    return {answer_arm(proxy, raw) for raw in answers}


def test_the_app_gets_the_stable_models_answer_when_the_canary_refuses(
        loop: ProxyServer, tmp_path: Path) -> None:
    _, model = open_canary(loop, tmp_path, percent=50)
    loop.upstream.state.fail_containing[model] = 404  # the fine-tune was deleted
    client = loop.openai()
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=[{"role": "user", "content": "Where is it?"}])
        for n in range(30)]
    assert answered_by(loop, answers) == {CURRENT}  # on main: 404 for the canary's users
    wait_ingested(loop, 30)
    rows = {r["target"]: r for r in loop.admin().route_health(ALIAS)["targets"]}
    assert rows[model]["requests"] and rows[model]["errors"] == rows[model]["requests"]
    assert rows[CURRENT]["errors"] == 0


def test_refusals_sent_to_the_arm_a_client_sees_do_not_roll_an_even_canary_back(
        loop: ProxyServer, tmp_path: Path) -> None:
    """A client with an app key knows which arm answered and sends requests every model
    refuses as the users that landed on the canary, five each (the per user weight): on main
    90 such requests rolled an even canary back. (The answer's `model` no longer tells, r14e
    #4; the client is told here anyway, as a side channel might.)"""
    cfg, model = open_canary(loop, tmp_path, percent=50)
    loop.upstream.state.fail_containing[BROKEN] = 400
    client, sent, refused = loop.openai(), 0, 0
    for n in range(60):
        user = f"user-{n}"
        answer = client.chat.completions.with_raw_response.create(
            model=ALIAS, user=user, messages=[{"role": "user", "content": "Where is it?"}])
        sent += 1
        assert answer.parse().model == ALIAS
        if answer_arm(loop, answer) != model:
            continue
        for _ in range(5):
            try:
                client.chat.completions.create(
                    model=ALIAS, user=user, messages=[{"role": "user", "content": BROKEN}])
            except openai.BadRequestError:
                refused += 1
            sent += 1
    assert refused >= 60, refused  # enough to roll back on main (about 90 did)
    wait_ingested(loop, sent)
    outcome = run(loop, cfg)
    assert outcome.run.get("outcome") != "rolled_back", outcome.message
    since = "2000-01-01T00:00:00Z"
    rows = {r["target"]: r for r in loop.admin().route_health(ALIAS, since=since)["targets"]}
    assert rows[model]["errors"] == 0 and rows[CURRENT]["errors"] == 0, rows
    # not judged either: refused requests sent to one arm do not dilute its error rate
    assert rows[model]["unjudged_requests"] == refused
    assert model in {t["model"] for t in loop.admin().routes()[ALIAS]["targets"]}
    assert outcome.run.get("outcome") != "promoted", outcome.message  # too few judged yet


STABLE, CANDIDATE = "stable-model", "candidate-model"


def canary_route(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, CANDIDATE, canary=50)


def judged(proxy: ProxyServer, count: int) -> dict[str, dict[str, Any]]:
    return health(proxy, count)  # once the background second opinions logged their rows


def test_the_stable_models_refusals_get_the_canarys_opinion_too(proxy: ProxyServer) -> None:
    """r14e #3: only the canary's 4xx had a second opinion, so when both models refuse some
    requests of their own (a per-model rate limit, say) only the canary's counted and an
    even canary was rolled back (48% at 3% each). Now each arm's refusal is asked of the
    other: here the stable model is rate limited on every request."""
    canary_route(proxy)
    proxy.upstream.state.fail_containing[STABLE] = 429
    client = proxy.openai()
    answers = [client.with_options(max_retries=0).chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=[{"role": "user", "content": "hi"}])
        for n in range(30)]
    assert answered_by(proxy, answers) == {CANDIDATE}  # on main: 429 for the stable arm
    rows = judged(proxy, 30)
    assert rows[STABLE]["requests"] and rows[STABLE]["error_rate"] == 1.0, rows
    assert rows[CANDIDATE]["errors"] == 0


def test_requests_the_client_gave_up_on_are_never_successes(proxy: ProxyServer) -> None:
    """r14e #1: a canary answering after the app's timeout was promoted: its abandoned
    requests (no status) counted as successes; they could also dilute a bad canary. Then they
    were unjudged; now the stable model is asked in the background (issue 14) and answers
    within the client's wait: each is the canary's error."""
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, "slow-3000", canary=50)  # answers after 3 s
    client = proxy.openai().with_options(timeout=1.0, max_retries=0)
    gave_up = 0
    for n in range(20):
        try:
            client.chat.completions.create(model=ALIAS, user=f"user-{n}",
                                           messages=[{"role": "user", "content": "hi"}])
        except openai.APITimeoutError:
            gave_up += 1
    assert gave_up
    rows = judged(proxy, 20)
    slow = rows["slow-3000"]
    assert slow["errors"] == slow["requests"] == gave_up, rows  # on main: judged successes
    assert rows[STABLE]["errors"] == 0, rows


def test_a_failing_second_opinion_is_charged_to_nobody_and_the_primary_failure_stands(
        proxy: ProxyServer) -> None:
    """r14f #1: a request every model refuses went from the stable model to a canary failing
    with 500: the canary's 500 reached the app and was charged to the stable arm (a bad canary
    was promoted that way). Now the primary's own failure reaches the app (the stable model's
    refusal, the canary's 500), and a request that failed on both models is judged for nobody
    (r14h #1)."""
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, "fail-500", canary=50)
    proxy.upstream.state.fail_containing[BROKEN] = 400  # the stable model refuses it
    client = proxy.openai().with_options(max_retries=0)
    statuses = []
    for n in range(30):
        try:
            client.chat.completions.create(model=ALIAS, user=f"user-{n}",
                                           messages=[{"role": "user", "content": BROKEN}])
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    rows = judged(proxy, 30)
    drawn = dict(proxy.sql("SELECT route ->> 'primary', count(*) FROM interactions "
                           "GROUP BY 1"))
    assert sorted(statuses) == [400] * drawn[STABLE] + [500] * drawn["fail-500"], statuses
    assert all(r["errors"] == 0 and r["requests"] == 0 for r in rows.values()), rows


def test_a_refusal_of_the_clients_key_gets_no_second_opinion_on_another_key(
        proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """r14f #4: a bad client key refused by the stable model (401) was answered by the
    canary, on the operator's key for it (its `api_key_env`). A canary that would get the
    same client key is asked: tests/test_canary_client_keys.py."""
    monkeypatch.setenv("TUNELOOP_TEST_CANARY_KEY", "sk-operator-canary")
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, CANDIDATE, canary=50, api_key_env="TUNELOOP_TEST_CANARY_KEY")
    proxy.upstream.state.fail_containing[STABLE] = 401
    client = proxy.openai().with_options(max_retries=0)
    answered_by = []
    for n in range(20):
        try:
            answered_by.append(client.chat.completions.create(
                model=ALIAS, user=f"user-{n}",
                messages=[{"role": "user", "content": "hi"}]).model)
        except openai.AuthenticationError:
            answered_by.append("401")
    assert "401" in answered_by  # on main: the canary answered every stable-drawn request
    rows = judged(proxy, 20)
    assert rows[STABLE]["errors"] == 0, rows


@pytest.mark.parametrize("canary_answers", [True, False])
def test_a_client_gone_during_a_second_opinion_lets_it_judge_in_the_background(
        proxy: ProxyServer, canary_answers: bool) -> None:
    """The stable model refuses (429), the client hangs up while the slow canary gives its
    second opinion: the second opinion goes on in the background (proxy/background_opinion.py)
    and judges the row: the canary answered, so the refusal was the stable model's error; when
    the canary fails too, nobody's."""
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, "slow-1500", canary=10)
    proxy.upstream.state.fail_containing[STABLE] = 429
    if not canary_answers:
        proxy.upstream.state.fail_containing["slow-1500"] = 500
    client = proxy.openai().with_options(timeout=0.5, max_retries=0)
    for n in range(20):
        with contextlib.suppress(openai.APITimeoutError, openai.RateLimitError):
            client.chat.completions.create(model=ALIAS, user=f"user-{n}",
                                           messages=[{"role": "user", "content": "hi"}])
    rows = judged(proxy, 20)
    stable = rows[STABLE]
    if canary_answers:
        assert stable["requests"] and stable["errors"] == stable["requests"], rows
    else:
        assert stable["errors"] == 0 and stable["unjudged_requests"], rows


def test_a_refusal_of_the_clients_key_is_no_error_of_either_arm(proxy: ProxyServer) -> None:
    """A bad client key (401, never asked again) on requests drawn for the canary counted as
    the canary's errors, while the same 401 on the stable arm was not judged: anyone without
    a valid key could roll a healthy canary back."""
    canary_route(proxy)
    proxy.upstream.state.fail_containing["bad-key-marker"] = 401
    client = proxy.openai().with_options(max_retries=0)
    for n in range(20):
        with contextlib.suppress(openai.AuthenticationError):
            client.chat.completions.create(
                model=ALIAS, user=f"user-{n}",
                messages=[{"role": "user", "content": "bad-key-marker"}])
    rows = judged(proxy, 20)
    assert all(r["errors"] == 0 and r["unjudged_requests"] for r in rows.values()), rows
