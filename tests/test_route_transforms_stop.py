"""A target's trained stop is always sent: an app-set `stop` (even `[]`) is merged with it,
never in its place, so a fine-tune does not run on past its end marker (and an app's key can't
make the canary look bad). OpenAI allows 4: past that, the trained stop and the app's first
ones are sent, the rest counted and noted in the row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import (
    UPSTREAM_KEY,
    ProxyServer,
    last_sent,
    module_proxy,
)

LEGACY_FT = "ft:davinci-002:acme::stop"
CHAT_FT = "ft:gpt-4o-mini-2024-07-18:acme::stop"
SEPARATOR = "\n\n###\n\n"
ROUTES = {
    "qa-stop": {"targets": [{"model": LEGACY_FT, "transforms": [
        {"type": "legacy_separator", "separator": SEPARATOR}, {"type": "stop", "stop": " END"}]}]},
    "chat-stop": {"targets": [{"model": CHAT_FT, "transforms": [
        {"type": "stop", "stop": ["<E>", "<F>"]}]}]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(tmp_path_factory.mktemp("stop")) as proxy:
        proxy.admin().put_routes(ROUTES)
        yield proxy


@pytest.mark.parametrize(("app_stop", "sent"), [
    (None, " END"),
    ([], [" END"]),
    (["\n\n\n"], [" END", "\n\n\n"]),
    ("\n\n\n", [" END", "\n\n\n"]),
    (" END", " END"),  # the app already asks for it: sent as the app sent it
    ([" END", "x", "x"], [" END", "x"]),
])
def test_the_trained_stop_is_merged_with_the_apps(server: ProxyServer, app_stop: Any,
                                                  sent: Any) -> None:
    extra = {} if app_stop is None else {"stop": app_stop}
    raw = server.openai().completions.with_raw_response.create(
        model="qa-stop", prompt="topic", max_tokens=5, **extra)
    body = last_sent(server, LEGACY_FT)
    assert body["stop"] == sent and body["prompt"] == "topic" + SEPARATOR
    assert "stops_dropped" not in server.row(raw.headers["x-tuneloop-id"])["route"]


def test_chat_stop_empty_list_still_gets_the_trained_stop(server: ProxyServer) -> None:
    server.openai().chat.completions.create(
        model="chat-stop", messages=[{"role": "user", "content": "hi"}], stop=[])
    assert last_sent(server, CHAT_FT)["stop"] == ["<E>", "<F>"]


def test_past_four_the_trained_stop_and_the_apps_first_ones_are_sent_and_noted(
        server: ProxyServer) -> None:
    raw = server.openai().chat.completions.with_raw_response.create(
        model="chat-stop", messages=[{"role": "user", "content": "hi"}],
        stop=["a", "<E>", "b", "c"])
    assert last_sent(server, CHAT_FT)["stop"] == ["<E>", "<F>", "a", "b"]
    row = server.row(raw.headers["x-tuneloop-id"])
    assert row["request"]["stop"] == ["a", "<E>", "b", "c"]  # what the app sent, kept
    assert row["route"]["stops_dropped"] == ["c"]
    metrics = server.http().get("/metrics").text
    assert any(line.startswith("tuneloop_stops_dropped_total{") and "chat-stop" in line
               and line.endswith(" 1.0") for line in metrics.splitlines())


@pytest.mark.parametrize("app_stop", [
    ["a", "b", "c", "d", "e"],  # more than OpenAI's 4
    ["a", ""],  # an empty string
    "",
    ["a", 5],  # not a string
    {"a": 1},
])
def test_a_stop_openai_refuses_reaches_the_target_as_sent_and_is_counted(
        server: ProxyServer, app_stop: Any) -> None:
    """The upstream refuses it for the baseline: the fine-tune must get it as the app sent it
    too (not the merged, valid stop), so an app key can't make only one arm fail."""
    body = {"model": "chat-stop", "messages": [{"role": "user", "content": "hi"}],
            "stop": app_stop}
    response = server.http().post("/v1/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {UPSTREAM_KEY}"})
    assert response.status_code < 500, response.text
    assert last_sent(server, CHAT_FT) == {**body, "model": CHAT_FT}
    row = server.row(response.headers["x-tuneloop-id"])
    assert row["route"]["template_mismatch"] == "malformed"
    assert row["sent_request"] is None and "stops_dropped" not in row["route"]


def test_five_stops_with_the_openai_sdk_are_sent_as_the_app_sent_them(
        server: ProxyServer) -> None:
    server.openai().chat.completions.create(
        model="chat-stop", messages=[{"role": "user", "content": "hi"}],
        stop=["a", "b", "c", "d", "e"])
    assert last_sent(server, CHAT_FT)["stop"] == ["a", "b", "c", "d", "e"]
