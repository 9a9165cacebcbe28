"""Whose key a 401/403 refused (r14h #3), and hang-ups the canary's health must judge (r14h #4).

A 401/403 on the operator's key (a route's `api_key_env`, the server's key) is a failure of
the target like any other: the other arm's second opinion, and the target's error. A refusal
of the client's own passed-through key: tests/test_canary_client_keys.py.

A client that gives up after the upstream was silent `upstream_stall_s` (before the first
byte, or since a stream's last chunk) gave up on a stall: an error of that arm. A quicker
hang-up is a user's cancel, judged for nobody, and an unfinished stream is never a success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tests.test_canary_failures import ALIAS, CANARY, HI, STABLE, health


def test_a_canary_refusing_the_operators_key_is_its_error(
        proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The canary's deployment answers 403 (no access to the model, an expired key of the
    route's `api_key_env`): on main the app got the 403s, the canary was charged nothing and
    was promoted. Now the stable model answers them and each is the canary's error."""
    monkeypatch.setenv("TUNELOOP_TEST_CANARY_KEY", "sk-operator-canary")
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, "fail-403", canary=50, api_key_env="TUNELOOP_TEST_CANARY_KEY")
    client = proxy.openai().with_options(max_retries=0)
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=HI) for n in range(20)]
    assert {a.status_code for a in answers} == {200}
    rows = health(proxy, 20)
    assert rows["fail-403"]["requests"] and rows["fail-403"]["error_rate"] == 1.0, rows
    assert rows[STABLE]["errors"] == 0, rows
    keys = proxy.sql("SELECT DISTINCT route ->> 'refused_key' FROM interactions "
                     "WHERE route ->> 'primary' = 'fail-403'")
    assert keys == [["operator"]]


def test_a_stable_model_refusing_the_server_key_is_its_error(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """With issued keys the proxy sends the server's key upstream: a 401 of the stable model
    is its failure (the canary answers), not the client's."""
    proxy = proxy_factory(issue_keys=True, openai_api_key="sk-server")
    app_key = proxy.admin().create_key("app")["key"]
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": "fail-401"}]}})
    proxy.admin().promote(ALIAS, CANARY, canary=50)
    client = proxy.openai(api_key=app_key).with_options(max_retries=0)
    answers = [client.chat.completions.with_raw_response.create(
        model=ALIAS, user=f"user-{n}", messages=HI) for n in range(20)]
    assert {a.status_code for a in answers} == {200}
    rows = health(proxy, 20)
    assert rows["fail-401"]["requests"] and rows["fail-401"]["error_rate"] == 1.0, rows


def stalls_after(proxy_factory: Callable[..., ProxyServer], monkeypatch: pytest.MonkeyPatch,
                 stall_s: float) -> ProxyServer:
    """A proxy whose `upstream_stall_s` is `stall_s` (set as an operator would: its
    variable)."""
    monkeypatch.setenv("TUNELOOP_UPSTREAM_STALL_S", str(stall_s))
    return proxy_factory()


def stream_and_give_up(proxy: ProxyServer, user: str, read_s: float) -> bool:
    """A streamed request the client abandons after `read_s` without a byte; whether it
    gave up."""
    try:
        with httpx.Client(timeout=httpx.Timeout(5, read=read_s)) as client, client.stream(
                "POST", proxy.base_url + "/chat/completions",
                headers={"authorization": f"Bearer {UPSTREAM_KEY}"},
                json={"model": ALIAS, "stream": True, "user": user,
                      "messages": [{"role": "user", "content": "hello there friend"}]}) as r:
            for _ in r.iter_lines():
                pass
    except httpx.ReadTimeout:
        return True
    return False


@pytest.mark.parametrize(("stall_s", "judged"), [(0.3, "error"), (30.0, "unjudged")])
def test_a_stream_that_stalls_after_its_first_chunk(
        proxy_factory: Callable[..., ProxyServer], monkeypatch: pytest.MonkeyPatch,
        stall_s: float, judged: str) -> None:
    """The canary sends its first chunk, then stalls; the apps give up after 0.7 s. On main
    each was a success (status 200, client_disconnected). Past `upstream_stall_s` it is the
    canary's error; a quicker hang-up is unjudged, never a success."""
    proxy = stalls_after(proxy_factory, monkeypatch, stall_s)
    slow = FakeOpenAIState()
    slow.chunk_delay_ms = 1500
    with serve_app(create_fake_openai(slow)) as slow_url:
        proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
        proxy.admin().promote(ALIAS, CANARY, canary=50, base_url=slow_url + "/v1")
        gave_up = sum(stream_and_give_up(proxy, f"user-{n}", 0.7) for n in range(16))
        assert gave_up
        rows = health(proxy, 16)
    canary: dict[str, Any] = rows[CANARY]
    assert rows[STABLE]["errors"] == 0, rows
    if judged == "error":
        assert canary["errors"] == canary["requests"] == gave_up, rows
    else:
        assert canary["requests"] == 0 and canary["unjudged_requests"] == gave_up, rows


@pytest.mark.parametrize("hung", ["canary", "stable"])
def test_an_arm_that_hangs_past_the_stall_limit_errs(
        proxy_factory: Callable[..., ProxyServer], monkeypatch: pytest.MonkeyPatch,
        hung: str) -> None:
    """An arm that never answers within the app's timeout: on main the abandoned requests
    were unjudged and a canary hanging on a third of its requests was promoted. Past
    `upstream_stall_s` each is that arm's error, on either arm."""
    proxy = stalls_after(proxy_factory, monkeypatch, 0.3)
    stable, canary = ("slow-3000", CANARY) if hung == "stable" else (STABLE, "slow-3000")
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": stable}]}})
    proxy.admin().promote(ALIAS, canary, canary=50)
    client = proxy.openai().with_options(timeout=1.0, max_retries=0)
    gave_up = 0
    for n in range(16):
        try:
            client.chat.completions.create(model=ALIAS, user=f"user-{n}", messages=HI)
        except openai.APITimeoutError:
            gave_up += 1
    assert gave_up
    rows = health(proxy, 16)
    assert rows["slow-3000"]["errors"] == rows["slow-3000"]["requests"] == gave_up, rows
    other = CANARY if hung == "stable" else STABLE
    assert rows[other]["errors"] == 0 and rows[other]["requests"] == 16 - gave_up, rows
