"""The OpenAI-compatible endpoints through a real proxy, with the official SDK as the client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores, one_store

pytestmark = both_stores

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def test_chat_with_tool_calls_is_relayed_and_logged(proxy: ProxyServer) -> None:
    client = proxy.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "weather in Paris"}],
        tools=[WEATHER_TOOL],
        extra_headers={"x-tuneloop-tags": "support,tier:gold", "x-tuneloop-user": "u-1",
                       "x-tuneloop-session": "s-1"},
        metadata={"feature": "weather"},
        extra_body={"unknown_field": {"kept": True}},
    )
    completion = raw.parse()
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    interaction_id = raw.headers["x-tuneloop-id"]
    assert len(interaction_id) == 36 and interaction_id[14] == "7"

    sent = proxy.upstream.state.requests[-1]
    assert not any(name.startswith("x-tuneloop-") for name in sent.headers)
    assert sent.json["unknown_field"] == {"kept": True}
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

    row = proxy.row(interaction_id)
    assert row["endpoint"] == "chat.completions"
    assert row["model"] == row["upstream_model"] == "gpt-4o-mini"
    assert row["route"] is None
    assert row["traffic"] == "production"
    assert row["request"]["messages"][1]["content"] == "weather in Paris"
    assert row["request"]["unknown_field"] == {"kept": True}
    assert row["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] \
        == "get_weather"
    assert row["status_code"] == 200 and row["finish"] == "completed" and row["error"] is None
    assert row["stream"] is False
    assert row["tags"] == ["support", "tier:gold"]
    assert (row["user_id"], row["session_id"]) == ("u-1", "s-1")
    assert row["metadata"] == {"feature": "weather"}
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["completion_tokens"] == completion.usage.completion_tokens
    assert row["cost_usd"] > 0
    assert row["latency_ms"] >= row["ttfb_ms"] > 0


@one_store
def test_request_body_reaches_the_upstream_byte_for_byte(proxy: ProxyServer) -> None:
    body = b'{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi"}],"zz":[1,2.50]}'
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", content=body,
                             headers={"authorization": "Bearer k", "content-type":
                                      "application/json"})
    assert response.status_code == 200
    assert proxy.upstream.state.requests[-1].body == body


def test_streamed_chat_with_tool_calls_and_usage_is_assembled(proxy: ProxyServer) -> None:
    client = proxy.openai()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Oslo"}],
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        interaction_id = raw.headers["x-tuneloop-id"]
        chunks = list(raw.parse())
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks if c.choices and c.choices[0].delta.tool_calls
    )
    usage = chunks[-1].usage
    row = proxy.row(interaction_id)
    assert row["stream"] is True and row["finish"] == "completed"
    message = row["response"]["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {"name": "get_weather",
                                                     "arguments": arguments}
    assert json.loads(arguments) == {"query": "weather in Oslo"}
    assert row["response"]["choices"][0]["finish_reason"] == "tool_calls"
    assert row["prompt_tokens"] == usage.prompt_tokens
    assert row["completion_tokens"] == usage.completion_tokens
    assert row["ttfb_ms"] is not None


def test_streamed_text_is_relayed_unchanged_and_assembled(proxy: ProxyServer) -> None:
    with proxy.http() as http, http.stream(
        "POST", "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "stream": True, "n": 2,
              "messages": [{"role": "user", "content": "tell me a story"}]},
        headers={"authorization": "Bearer k"},
    ) as response:
        relayed = b"".join(response.iter_raw())
        interaction_id = response.headers["x-tuneloop-id"]
    assert relayed.endswith(b"data: [DONE]\n\n")
    row = proxy.row(interaction_id)
    contents = [c["message"]["content"] for c in row["response"]["choices"]]
    assert contents == ["echo: tell me a story", "echo: tell me a story (1)"]


def test_n_choices_and_json_mode(proxy: ProxyServer) -> None:
    client = proxy.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", n=3, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "give json"}],
    )
    completion = raw.parse()
    assert len(completion.choices) == 3
    assert json.loads(completion.choices[0].message.content) == {"echo": "give json"}
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert len(row["response"]["choices"]) == 3
    assert row["request"]["response_format"] == {"type": "json_object"}


def test_legacy_completions_stream_and_not(proxy: ProxyServer) -> None:
    client = proxy.openai()
    prompt = "What is fine-tuning?\n\n###\n\n"
    raw = client.completions.with_raw_response.create(model="davinci-002", prompt=prompt,
                                                      stop="###", max_tokens=20)
    text = raw.parse().choices[0].text
    assert text.startswith(" echo:")
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["endpoint"] == "completions"
    assert row["request"]["prompt"] == prompt
    assert row["response"]["choices"][0]["text"] == text

    with client.completions.with_streaming_response.create(
        model="davinci-002", prompt=prompt, stream=True
    ) as streamed:
        interaction_id = streamed.headers["x-tuneloop-id"]
        pieces = "".join(c.choices[0].text for c in streamed.parse() if c.choices)
    row = proxy.row(interaction_id)
    assert row["stream"] is True and row["finish"] == "completed"
    assert row["response"]["choices"][0]["text"] == pieces


def test_responses_api_stream_and_not(proxy: ProxyServer) -> None:
    client = proxy.openai()
    raw = client.responses.with_raw_response.create(model="gpt-4o-mini", input="hello there")
    assert raw.parse().output_text == "echo: hello there"
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["endpoint"] == "responses"
    assert row["prompt_tokens"] is not None

    with client.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="stream me", stream=True
    ) as streamed:
        interaction_id = streamed.headers["x-tuneloop-id"]
        events = list(streamed.parse())
    assert events[-1].type == "response.completed"
    row = proxy.row(interaction_id)
    assert row["finish"] == "completed"
    assert row["response"]["output"][0]["content"][0]["text"] == "echo: stream me"


def test_embeddings_are_relayed_but_vectors_not_stored(proxy: ProxyServer) -> None:
    client = proxy.openai()
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one", "two", "three"], dimensions=16
    )
    result = raw.parse()
    assert len(result.data) == 3 and len(result.data[0].embedding) == 16
    row = proxy.row(raw.headers["x-tuneloop-id"])
    assert row["response"]["data_count"] == 3
    assert row["response"]["dimensions"] == 16
    assert "data" not in row["response"]
    assert row["prompt_tokens"] is not None


def test_models_lists_upstream_models_and_aliases(proxy: ProxyServer) -> None:
    proxy.admin().put_routes({"support-bot": {"targets": [{"model": "gpt-4o-mini"}]}})
    ids = {m.id for m in proxy.openai().models.list()}
    assert {"gpt-4o-mini", "support-bot"} <= ids


@one_store
def test_other_paths_pass_through_unchanged(proxy: ProxyServer) -> None:
    with proxy.http() as http:
        response = http.put("/v1/echo/anything?x=1&y=2", content=b"raw-bytes",
                            headers={"authorization": "Bearer k", "x-custom": "kept",
                                     "x-unlisted": "dropped"})
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/v1/echo/anything"
    assert "x=1" in echoed["query"]
    assert echoed["headers"]["x-custom"] == "kept"  # listed in forward_headers (conftest)
    assert "x-unlisted" not in echoed["headers"]
    assert "x-tuneloop-id" not in response.headers


@pytest.mark.parametrize("status", [429, 500])
def test_upstream_errors_pass_through_with_their_status_and_body(
    proxy: ProxyServer, status: int
) -> None:
    client = proxy.openai()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-fail": str(status)},
        )
    response = caught.value.response
    assert response.status_code == status
    assert caught.value.body["code"] is not None  # the upstream's own error body
    if status == 429:
        assert response.headers["retry-after"] == "1"
    row = proxy.row(response.headers["x-tuneloop-id"])
    assert row["status_code"] == status and row["finish"] == "upstream_error"
    assert row["error"]


def test_upstream_down_answers_an_openai_shaped_502(proxy_factory: Any) -> None:
    proxy = proxy_factory(upstream="http://127.0.0.1:9/v1")
    with proxy.http() as http:
        response = http.post("/v1/chat/completions",
                             json={"model": "gpt-4o-mini", "messages": []})
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == "upstream_unreachable"
    row = proxy.row(response.headers["x-tuneloop-id"])
    assert row["finish"] == "upstream_error" and row["status_code"] == 502


def test_upstream_timeout_answers_504(proxy_factory: Any) -> None:
    proxy = proxy_factory(read_timeout_s=0.3)
    with proxy.http() as http:
        response = http.post("/v1/chat/completions",
                             json={"model": "gpt-4o-mini", "messages": []},
                             headers={"x-fake-delay-ms": "2000"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    row = proxy.row(response.headers["x-tuneloop-id"])
    assert row["finish"] == "timeout"


@one_store
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'{"model": "x", "pad": "' + b"a" * 70_000 + b'"}', 413, "request_too_large"),
    ],
)
def test_bad_bodies_get_openai_shaped_errors(proxy_factory: Any, body: bytes, status: int,
                                              code: str) -> None:
    proxy = proxy_factory(max_body_bytes=65_536)
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", content=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert len(proxy.upstream.state.requests) == 0


@one_store
def test_invalid_tag_is_refused(proxy: ProxyServer) -> None:
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "m", "messages": []},
                             headers={"x-tuneloop-tags": "ok,not ok!"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-tuneloop-tags"


def test_no_log_header_logs_nothing(proxy: ProxyServer) -> None:
    client = proxy.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "private"}],
        extra_headers={"x-tuneloop-no-log": "1"},
    )
    assert raw.parse().choices[0].message.content == "echo: private"
    assert "x-tuneloop-id" not in raw.headers
    client.chat.completions.create(model="gpt-4o-mini",
                                   messages=[{"role": "user", "content": "public"}])
    proxy.wait_logged(1)
    rows = proxy.sql("SELECT request->'messages'->0->>'content' FROM interactions")
    assert rows == [["public"]]


def test_upstream_cut_mid_stream_is_logged_with_partial_content(proxy: ProxyServer) -> None:
    client = proxy.openai()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "a long answer please"}],
        extra_headers={"x-fake-cut-after": "2"},
    ) as raw:
        interaction_id = raw.headers["x-tuneloop-id"]
        with pytest.raises(openai.APIError):
            for _ in raw.parse():
                pass
    row = proxy.row(interaction_id)
    assert row["finish"] == "upstream_cut"
    content = row["response"]["choices"][0]["message"]["content"]
    assert content and "echo: a long answer please".startswith(content)
    assert content != "echo: a long answer please"


def test_client_disconnect_mid_stream_is_logged(proxy: ProxyServer) -> None:
    proxy.upstream.state.chunk_delay_ms = 300
    with httpx.Client(base_url=proxy.url, timeout=10) as http, http.stream(
        "POST", "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "stream": True,
              "messages": [{"role": "user", "content": "slowly"}]},
    ) as response:
        interaction_id = response.headers["x-tuneloop-id"]
        next(response.iter_raw())
    # leaving the block closed the connection mid-stream
    row = proxy.row(interaction_id)
    assert row["finish"] == "client_disconnected"
    assert row["stream"] is True


@one_store
def test_metrics_and_health(proxy: ProxyServer) -> None:
    proxy.openai().chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "m"}])
    with proxy.http() as http:
        health = http.get("/healthz").json()
        metrics = http.get("/metrics").text
    assert health["status"] == "ok"
    for name in ("tuneloop_requests_total", "tuneloop_upstream_latency_seconds",
                 "tuneloop_spool_bytes", "tuneloop_ingest_lag_seconds",
                 "tuneloop_dropped_interactions"):
        assert name in metrics
    assert 'tuneloop_requests_total{endpoint="chat.completions",status="200"} 1.0' in metrics


@one_store
def test_client_without_a_key_gets_openai_api_key_upstream(proxy_factory: Any) -> None:
    proxy = proxy_factory(openai_api_key="sk-server-side-key")
    with proxy.http() as http:
        response = http.post("/v1/chat/completions",
                             json={"model": "gpt-4o-mini", "messages": []})
    assert response.status_code == 200
    assert proxy.upstream.state.requests[-1].headers["authorization"] == \
        "Bearer sk-server-side-key"


@one_store
def test_async_sdk_streams_through_the_proxy(proxy: ProxyServer) -> None:
    import asyncio

    async def run() -> str:
        client = proxy.async_openai()
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "async"}]
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return text

    assert asyncio.run(run()) == "echo: async"



@one_store
def test_pass_through_quotes_the_decoded_path_again(proxy: ProxyServer) -> None:
    with proxy.http() as http:
        response = http.get("/v1/echo/a%20b?q=x%26y")
        refused = http.get("/v1/echo/a%2Fb")  # an encoded slash: tests/security/test_paths.py
        non_ascii = http.get("/v1/echo/b%C3%A9")  # OpenAI's ids are ASCII
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["query"] == "q=x%26y"
    assert proxy.upstream.state.requests[-1].path == "/v1/echo/a b"
    assert refused.status_code == 400 and non_ascii.status_code == 400
