"""The upstream client seen from the apps in front of a real proxy: one app's answer must never
reach another app, whatever the first app sends and however oddly the upstream frames replies.

The upstream is a raw-socket server on loopback (`tests.fakes.raw_http`) that serves each
connection's requests one after the other, as an HTTP/1.1 server does, and answers a chat
completion with "echo: <the user's message>".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes.raw_http import RawUpstream, Seen, ThreadedRawUpstream, send


def completion(text: str) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})


def asked(seen: Seen) -> str:
    return str(orjson.loads(seen.body)["messages"][-1]["content"])


async def slow_interim_then_echo(seen: Seen, writer: asyncio.StreamWriter) -> None:
    """App A's request gets `100 Continue` (it asked for one; a server may also send it
    unasked) and its real answer only 0.3 s later: the red team's reproduction."""
    body = completion("echo: " + asked(seen))
    if asked(seen) == "I am A":
        await send(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0.3)
    await send(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n%s" % (len(body), body))


async def close_delimited_echo(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    body = completion("echo: " + asked(seen))
    await send(writer, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n",
               body[:20], body[20:])
    return False  # the close ends the body


@pytest.fixture
def raw_upstream() -> Iterator[Callable[[Any], RawUpstream]]:
    running: list[ThreadedRawUpstream] = []

    def start(answer: Any) -> RawUpstream:
        server = ThreadedRawUpstream(answer)
        running.append(server)
        return server.__enter__()

    yield start
    for server in running:
        server.__exit__(None, None, None)


def chat(http: httpx.Client, text: str, app: str, **headers: str) -> httpx.Response:
    return http.post("/v1/chat/completions",
                     headers={"authorization": f"Bearer {UPSTREAM_KEY}",
                              "x-tuneloop-user": app, **headers},
                     json={"model": "gpt-4o-mini",
                           "messages": [{"role": "user", "content": text}]})


def answer_text(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def test_an_app_sending_expect_100_continue_never_gets_its_answer_to_another_app(
        proxy_factory: Callable[..., ProxyServer], raw_upstream: Callable[[Any], RawUpstream]
) -> None:
    upstream = raw_upstream(slow_interim_then_echo)
    proxy = proxy_factory(upstream=upstream.url + "/v1")
    answers: dict[str, httpx.Response] = {}

    def app(name: str, text: str, **headers: str) -> None:
        with httpx.Client(base_url=proxy.url, timeout=5) as http:
            answers[name] = chat(http, text, name, **headers)

    # app A, with Expect; once the upstream has A's request (its answer is 0.3 s away), app B,
    # then B again after A's answer: on main B was handed "echo: I am A"
    app_a = threading.Thread(target=app, args=("a", "I am A"), kwargs={"expect": "100-continue"})
    app_a.start()
    deadline = time.monotonic() + 5
    while not upstream.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the upstream's 100 Continue has reached the proxy; A's answer has not
    app("b", "I am B")
    app_a.join(10)
    app("b2", "I am B again")

    for name in ("b", "b2"):
        assert b"I am A" not in answers[name].content, f"app {name} was handed app A's answer"
    assert {name: (r.status_code, r.content) for name, r in answers.items()} == {
        "a": (200, completion("echo: I am A")), "b": (200, completion("echo: I am B")),
        "b2": (200, completion("echo: I am B again"))}
    assert all(seen.header("expect") is None for seen in upstream.seen)
    for name, response in answers.items():  # what was logged for each app is its own answer
        row = proxy.row(response.headers["x-tuneloop-id"])
        assert row["user_id"] == name
        assert row["response"]["choices"][0]["message"]["content"] == answer_text(response)


def test_a_body_ended_by_the_upstream_closing_is_a_complete_answer(
        proxy_factory: Callable[..., ProxyServer], raw_upstream: Callable[[Any], RawUpstream]
) -> None:
    upstream = raw_upstream(close_delimited_echo)
    proxy = proxy_factory(upstream=upstream.url + "/v1")
    with httpx.Client(base_url=proxy.url, timeout=5) as http:
        first = chat(http, "first", "a")
        second = chat(http, "second", "b")
    assert (first.status_code, first.content) == (200, completion("echo: first"))
    assert (second.status_code, second.content) == (200, completion("echo: second"))
    row = proxy.row(first.headers["x-tuneloop-id"])
    assert row["finish"] == "completed" and row["status_code"] == 200
    assert [seen.connection for seen in upstream.seen] == [0, 1]
