"""While a canary is open, the official SDK cannot tell which arm answered (r14e #4).

Through a real proxy with an open 50% canary, both arms answer chat completions, completions
and responses, streamed or not, with the alias as `model`, no `system_fingerprint` and none
of the upstream's headers that name a target; the store keeps the model that answered.
"""

from __future__ import annotations

from typing import Any

import openai

from tests.conftest import ProxyServer
from tests.fakes.openai_chat import FINGERPRINT

ALIAS, OTHER_ALIAS = "support-bot", "plain-bot"
STABLE, CANDIDATE = "stable-model", "candidate-model"
UPSTREAM_HEADERS = ("x-ratelimit-limit-requests", "x-request-id", "openai-processing-ms")
USERS = [f"user-{n}" for n in range(16)]


def open_canary(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]},
                              OTHER_ALIAS: {"targets": [{"model": STABLE}]}})
    proxy.admin().promote(ALIAS, CANDIDATE, canary=50)


def arms_of(proxy: ProxyServer, ids: list[str]) -> set[str]:
    return {proxy.row(i)["upstream_model"] for i in ids}


def covered(headers: Any) -> None:
    assert not {h for h in UPSTREAM_HEADERS if h in headers}, headers


def test_both_arms_answer_as_the_alias(proxy: ProxyServer) -> None:
    open_canary(proxy)
    client = proxy.openai()
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    ids: list[str] = []
    for user in USERS:
        raw = client.chat.completions.with_raw_response.create(
            model=ALIAS, user=user, messages=messages)  # type: ignore[arg-type]
        covered(raw.headers)
        answer = raw.parse()
        assert (answer.model, answer.system_fingerprint) == (ALIAS, None)
        assert answer.choices[0].message.content
        ids.append(raw.headers["x-tuneloop-id"])

        with client.chat.completions.with_streaming_response.create(
                model=ALIAS, user=user, messages=messages, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True}) as streamed:
            covered(streamed.headers)
            chunks = list(streamed.parse())
            ids.append(streamed.headers["x-tuneloop-id"])
        assert {(c.model, c.system_fingerprint) for c in chunks} == {(ALIAS, None)}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert arms_of(proxy, ids) == {STABLE, CANDIDATE}
    logged = {proxy.row(i)["response"]["system_fingerprint"] for i in ids}
    assert logged == {FINGERPRINT}  # the store keeps what the upstream said


def test_completions_and_responses_are_covered_too(proxy: ProxyServer) -> None:
    open_canary(proxy)
    client = proxy.openai()
    ids: list[str] = []
    for user in USERS[:8]:
        raw_completion = client.completions.with_raw_response.create(
            model=ALIAS, user=user, prompt="Say hi")
        assert raw_completion.parse().model == ALIAS
        streamed = client.completions.create(model=ALIAS, user=user, prompt="Say hi",
                                             stream=True)
        assert {c.model for c in streamed} == {ALIAS}
        raw_response = client.responses.with_raw_response.create(
            model=ALIAS, user=user, input="Say hi")
        covered(raw_response.headers)
        assert raw_response.parse().model == ALIAS
        events = list(client.responses.create(model=ALIAS, user=user, input="Say hi",
                                               stream=True))
        models = {e.response.model for e in events if hasattr(e, "response")}
        assert models == {ALIAS}, models
        ids += [raw_completion.headers["x-tuneloop-id"], raw_response.headers["x-tuneloop-id"]]
    assert arms_of(proxy, ids) == {STABLE, CANDIDATE}
    assert {proxy.row(i)["response"]["model"] for i in ids} == {STABLE, CANDIDATE}


def test_no_canary_and_a_model_name_are_left_alone(proxy: ProxyServer) -> None:
    open_canary(proxy)
    client = proxy.openai()
    for model, expected in ((OTHER_ALIAS, STABLE), ("gpt-4o-mini", "gpt-4o-mini")):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}])
        answer = raw.parse()
        assert (answer.model, answer.system_fingerprint) == (expected, FINGERPRINT)
        assert all(h in raw.headers for h in UPSTREAM_HEADERS)
    answer = client.chat.completions.create(model=ALIAS,
                                            messages=[{"role": "user", "content": "hi"}])
    assert answer.model == ALIAS


def test_the_proxys_error_names_no_host(proxy: ProxyServer) -> None:
    """Arms served apart: the proxy's error for the one that failed does not say where."""
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE,
                                                   "base_url": "http://127.0.0.1:9/v1"}]}})
    proxy.admin().promote(ALIAS, CANDIDATE, canary=50, base_url="http://127.0.0.1:19/v1")
    client = proxy.openai()
    for user in USERS[:4]:
        try:
            client.chat.completions.create(model=ALIAS, user=user,
                                           messages=[{"role": "user", "content": "hi"}])
        except openai.APIStatusError as failed:
            assert failed.status_code == 502
            assert "127.0.0.1" not in failed.response.text, failed.response.text
            row = proxy.row(failed.response.headers["x-tuneloop-id"])
            assert "127.0.0.1" in row["error"]  # the store keeps the whole message
        else:
            raise AssertionError("nothing listens there")
