"""A 401/403 of the client's own passed-through key while a canary is open (issue 14, h2 #1).

When the other arm would get the very same credentials at the same origin, the refusal gets
its second opinion like any failure: the other arm's answer makes it the drawn arm's error
(the app gets that answer), its refusal makes the key bad, judged for nobody. When the other
arm would get other credentials (its `api_key_env`, or none at another origin), the client's
key is never tried elsewhere and the refusal stays unjudged, as before.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import openai
import pytest

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tests.test_canary_failures import ALIAS, CANARY, HI, STABLE, health


def test_a_canary_refusing_the_clients_key_the_stable_model_takes_is_rolled_back(
        proxy: ProxyServer) -> None:
    """Pass-through: the canary answers 403 to 30% of requests on the app's own key (a
    fine-tune this key cannot reach) while the stable model answers the same key. On main no
    second opinion was asked: the apps got the 403s, the canary had 0 errors and was
    promoted. Now the stable model answers each and each is the canary's error."""
    state = proxy.upstream.state
    state.model_error_rate[CANARY], state.model_error_status[CANARY] = 0.3, 403
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(api_key=UPSTREAM_KEY).with_options(max_retries=0)
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=HI) for n in range(240)]
    assert {a.status_code for a in answers} == {200}
    rows = health(proxy, 240)
    refused = int(state.model_calls[CANARY] * 0.3 + 1e-9)  # the fake's even spread
    assert rows[CANARY]["errors"] == refused > 20, rows
    assert rows[CANARY]["unjudged_requests"] == 0 and rows[STABLE]["errors"] == 0, rows
    assert all(r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
               for r in state.requests if r.path.endswith("/chat/completions"))
    verdict = judge_canary(rows[CANARY], rows[STABLE], CanaryConfig(), timedelta(hours=1))
    assert verdict.verdict == "rollback", verdict.reasons


def test_a_stable_model_refusing_the_clients_key_the_canary_takes_is_its_error(
        proxy: ProxyServer) -> None:
    """The other way round: the stable arm refuses the app's key, the canary answers it."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": "fail-401"}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(api_key=UPSTREAM_KEY).with_options(max_retries=0)
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=HI) for n in range(20)]
    assert {a.status_code for a in answers} == {200}
    rows = health(proxy, 20)
    assert rows["fail-401"]["requests"] and rows["fail-401"]["error_rate"] == 1.0, rows
    assert proxy.sql("SELECT DISTINCT route ->> 'refused_key', route ->> 'primary_status' FROM "
                     "interactions WHERE route ->> 'primary' = 'fail-401'") == [["client", "401"]]


def test_a_key_both_arms_refuse_is_nobodys(proxy: ProxyServer) -> None:
    """A bad key: both arms refuse it. The app gets its 401, and the request, asked of both,
    is judged for neither arm (on main the other arm was never asked)."""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(api_key="sk-revoked").with_options(max_retries=0)
    for n in range(20):
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=ALIAS, user=f"user-{n}", messages=HI,
                                           extra_headers={"x-fake-fail": "401"})
    rows = health(proxy, 20)
    assert all(r["errors"] == 0 and r["requests"] == 0 for r in rows.values()), rows
    assert sum(r["unjudged_requests"] for r in rows.values()) == 20, rows
    assert proxy.sql("SELECT DISTINCT route ->> 'refused_key', route ->> 'attempt', "
                     "route ->> 'second_opinion_status' FROM interactions") \
        == [["client", "0", "401"]]


@pytest.mark.parametrize("elsewhere", ["api_key_env", "keyless_origin"])
def test_a_refusal_of_the_clients_key_the_other_arm_would_not_get_stays_unjudged(
        proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch, elsewhere: str) -> None:
    """The stable arm gets the operator's key (`api_key_env`) or no key (a server at another
    origin): the canary's refusal of the app's key cannot be compared, so it is not asked
    again and stays unjudged; the app gets the 401, and its key goes nowhere new."""
    other = FakeOpenAIState()
    with serve_app(create_fake_openai(other)) as other_url:
        if elsewhere == "api_key_env":
            monkeypatch.setenv("TUNELOOP_TEST_STABLE_KEY", "sk-operator-stable")
            stable = {"model": STABLE, "api_key_env": "TUNELOOP_TEST_STABLE_KEY"}
        else:
            stable = {"model": STABLE, "base_url": other_url + "/v1"}
        admin = proxy.admin()
        admin.put_routes({ALIAS: {"targets": [stable]}})
        admin.promote(ALIAS, "fail-401", canary=50)
        client = proxy.openai(api_key=UPSTREAM_KEY).with_options(max_retries=0)
        for n in range(20):
            with contextlib.suppress(openai.AuthenticationError):
                client.chat.completions.create(model=ALIAS, user=f"user-{n}", messages=HI)
        rows = health(proxy, 20)
    assert rows["fail-401"]["errors"] == 0 and rows["fail-401"]["unjudged_requests"], rows
    assert proxy.sql("SELECT DISTINCT route ->> 'refused_key', route ->> 'attempt', "
                     "route ->> 'second_opinion_status' FROM interactions "
                     "WHERE status_code = 401") == [["client", "0", None]]
    sent = [r for s in (proxy.upstream.state, other) for r in s.requests
            if isinstance(r.json, dict) and r.json.get("model") == STABLE]
    assert sent and all(UPSTREAM_KEY not in str(r.headers) for r in sent)
