"""The fake upstreams speak well enough for the official SDKs (and litellm) to parse them."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import Completion, CreateEmbeddingResponse, FileObject, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from openai.types.responses import Response, ResponseStreamEvent

from tests.fakes import (
    FakeAnthropicState,
    FakeOpenAIState,
    create_anthropic_app,
    create_openai_app,
    free_port,
    serve_app,
)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

USER = [{"role": "user", "content": "hello there"}]
TOOLS: Any = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
]
TRAIN_LINE = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
}


@pytest.fixture(scope="module")
def openai_server() -> Iterator[tuple[str, FakeOpenAIState]]:
    state = FakeOpenAIState(finetune_step_seconds=0.02)
    with serve_app(create_openai_app(state)) as url:
        yield url, state


@pytest.fixture
def oa(openai_server: tuple[str, FakeOpenAIState]) -> tuple[openai.OpenAI, FakeOpenAIState]:
    url, state = openai_server
    state.reset()
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0), state


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[tuple[str, FakeAnthropicState]]:
    state = FakeAnthropicState()
    with serve_app(create_anthropic_app(state)) as url:
        yield url, state


@pytest.fixture
def an(anthropic_server: tuple[str, FakeAnthropicState]) -> tuple[str, FakeAnthropicState]:
    anthropic_server[1].reset()
    return anthropic_server


def test_chat_completion_body_and_headers(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, state = oa
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    assert completion.usage.total_tokens == 2 + completion.usage.completion_tokens
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-remaining-requests"] == "9999"
    assert "openai-processing-ms" in raw.headers
    recorded = state.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.json["messages"] == USER


def test_chat_variants(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    many = client.chat.completions.create(model="m", messages=USER, n=3)
    assert [c.message.content for c in many.choices] == [
        "echo: hello there",
        "echo: hello there (1)",
        "echo: hello there (2)",
    ]
    fmt: Any = {"type": "json_object"}
    as_json = client.chat.completions.create(model="m", messages=USER, response_format=fmt)
    assert json.loads(as_json.choices[0].message.content or "") == {"echo": "hello there"}
    tool_reply: Any = [*USER, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    after_tool = client.chat.completions.create(model="m", messages=tool_reply)
    assert after_tool.choices[0].message.content == "tool said: sunny"
    called = client.chat.completions.create(model="m", messages=USER, tools=TOOLS)
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = (choice.message.tool_calls or [])[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "hello there"}


def test_chat_stream_n2_with_usage(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    stream = client.chat.completions.create(
        model="m", messages=USER, n=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    texts = ["", ""]
    finishes = {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == ["echo: hello there", "echo: hello there (1)"]
    assert finishes == {0: "stop", 1: "stop"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_chat_stream_tool_calls(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    chunks = list(
        client.chat.completions.create(model="m", messages=USER, tools=TOOLS, stream=True)
    )
    calls = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or []]
    assert calls[0].id and calls[0].function and calls[0].function.name == "search"
    arguments = "".join((tc.function.arguments or "") for tc in calls if tc.function)
    assert json.loads(arguments) == {"query": "hello there"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_async_chat_stream(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa

    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=str(client.base_url), api_key="k") as aclient:
            stream = await aclient.chat.completions.create(model="m", messages=USER, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(run()) == "echo: hello there"


def test_legacy_completions(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    done = client.completions.create(model="davinci-002", prompt="one two three", stop=["thr"])
    assert done.choices[0].text == " echo: one two "
    assert done.usage is not None and done.usage.prompt_tokens == 3
    many = client.completions.create(model="davinci-002", prompt=["a", "b"])
    assert [c.text for c in many.choices] == [" echo: a", " echo: b"]
    stream = client.completions.create(
        model="davinci-002", prompt="x y", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " echo: x y"
    assert chunks[-1].usage is not None


def test_responses(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    response = client.responses.create(model="gpt-4o-mini", input="hi there")
    assert response.output_text == "echo: hi there" and response.status == "completed"
    assert response.usage is not None and response.usage.total_tokens == 5
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "as list"}]}]
    assert client.responses.create(model="m", input=items).output_text == "echo: as list"
    events = list(client.responses.create(model="m", input="streamed", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "echo: streamed"
    with client.responses.stream(model="m", input="helper") as stream:
        assert stream.get_final_response().output_text == "echo: helper"
    tools: Any = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    with client.responses.stream(model="m", input="q", tools=tools) as stream:
        call = stream.get_final_response().output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"query": "q"}


def test_embeddings(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, state = oa
    default = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert state.requests[-1].json["encoding_format"] == "base64"
    vector = default.data[0].embedding
    assert len(vector) == 8 and math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)
    floats = client.embeddings.create(model="e", input="a b", encoding_format="float")
    assert floats.data[0].embedding == vector
    wide = client.embeddings.create(model="e", input=[[1, 2], [3]], dimensions=32)
    assert [len(d.embedding) for d in wide.data] == [32, 32]
    assert default.usage.prompt_tokens == 3


def test_models_and_echo(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    ids = [m.id for m in client.models.list()]
    assert ids[:4] == [
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "davinci-002",
        "text-embedding-3-small",
    ]
    with httpx.Client(base_url=str(client.base_url)) as http:
        echoed = http.get("echo/anything?x=1", headers={"X-Probe": "yes"}).json()
    assert echoed["method"] == "GET" and echoed["path"] == "/v1/echo/anything"
    assert echoed["query"] == "x=1" and echoed["headers"]["x-probe"] == "yes"


def test_programmed_failures_and_retries(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, state = oa
    state.fail_next(1, 503)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 503 and info.value.code == "server_error"
    state.fail_next(2, 500, retry_after=0.01)
    retrying = client.with_options(max_retries=2)
    assert retrying.chat.completions.create(model="m", messages=USER).choices
    assert [r.headers["x-stainless-retry-count"] for r in state.requests[-3:]] == ["0", "1", "2"]
    with httpx.Client(base_url=str(client.base_url)) as http:
        limited = http.post("chat/completions", json={"model": "fail-429", "messages": USER})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_header_failures(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="m",
            messages=USER,
            extra_headers={"x-fake-fail": "429", "x-fake-retry-after": "7"},
        )
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body == {
        "message": "Rate limit reached for requests (fake upstream).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-500", messages=USER)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.1).chat.completions.create(
            model="m", messages=USER, extra_headers={"x-fake-delay-ms": "400"}
        )
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.1).chat.completions.create(model="slow-400", messages=USER)
    for kwargs in ({"extra_headers": {"x-fake-reset": "1"}, "model": "m"}, {"model": "reset"}):
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(messages=USER, **kwargs)
    assert client.chat.completions.create(model="m", messages=USER).choices


def test_stream_cuts(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    seen: list[Any] = []
    stream = client.chat.completions.create(
        model="m", messages=USER, stream=True, extra_headers={"x-fake-cut-after": "2"}
    )
    with pytest.raises(openai.APIConnectionError):
        seen.extend(stream)
    assert len(seen) == 2
    seen.clear()
    with pytest.raises(openai.APIConnectionError):
        seen.extend(client.responses.create(model="cut-3", input="x", stream=True))
    assert len(seen) == 3
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="cut-1", messages=USER)


def test_latency(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, state = oa
    state.latency_ms = 120
    try:
        started = time.perf_counter()
        client.chat.completions.create(model="m", messages=USER)
        assert time.perf_counter() - started >= 0.12
    finally:
        state.latency_ms = 0


def _upload(client: openai.OpenAI, lines: list[Any], name: str = "train.jsonl") -> str:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    return client.files.create(file=(name, text.encode()), purpose="fine-tune").id


def test_files(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, _ = oa
    file_id = _upload(client, [TRAIN_LINE])
    info = client.files.retrieve(file_id)
    assert (info.filename, info.purpose, info.status) == ("train.jsonl", "fine-tune", "processed")
    assert file_id in [f.id for f in client.files.list()]
    assert json.loads(client.files.content(file_id).text) == TRAIN_LINE
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def _wait(client: openai.OpenAI, job_id: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def test_fine_tuning_success(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, state = oa
    train = _upload(client, [TRAIN_LINE] * 3)
    job = client.fine_tuning.jobs.create(training_file=train, model="gpt-4o-mini", suffix="demo")
    assert job.status == "validating_files" and job.hyperparameters.n_epochs == 3
    done = _wait(client, job.id)
    assert done.status == "succeeded" and done.trained_tokens
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini:tuneloop-fake:demo:")
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=5))
    assert events[0].message == "The job has successfully completed"
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and metrics[0].data["step"] == 10 and "train_loss" in metrics[0].data
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [10, 8, 6]
    csv = client.files.content(done.result_files[0]).text
    assert (
        csv.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    )
    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(model=done.fine_tuned_model, messages=USER)
    assert answer.model == done.fine_tuned_model
    assert state.requests[-1].json["model"] == done.fine_tuned_model


def test_fine_tuning_failures_and_cancel(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    client, state = oa
    good = _upload(client, [TRAIN_LINE])
    bad = client.fine_tuning.jobs.create(
        training_file=_upload(client, [TRAIN_LINE, "{"]), model="m"
    )
    failed = _wait(client, bad.id)
    assert failed.status == "failed" and failed.error
    assert failed.error.code == "invalid_training_file" and "Line 2" in failed.error.message
    crash = _wait(
        client, client.fine_tuning.jobs.create(training_file=good, model="m", suffix="fail").id
    )
    assert crash.status == "failed" and crash.error and crash.error.code == "training_failed"
    dpo_method: Any = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}
    dpo = client.fine_tuning.jobs.create(training_file=good, model="m", method=dpo_method)
    assert dpo.method and dpo.method.dpo and dpo.method.dpo.hyperparameters
    assert dpo.method.dpo.hyperparameters.beta == 0.2
    assert _wait(client, dpo.id).error.param == "training_file"
    state.finetune_step_seconds = 60.0  # still running when cancelled, however slow the host
    running = client.fine_tuning.jobs.create(training_file=good, model="m")
    assert client.fine_tuning.jobs.cancel(running.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(training_file="file-missing", model="m")
    page = client.fine_tuning.jobs.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.data[0].id == running.id
    assert len(list(client.fine_tuning.jobs.list(limit=2))) == 4


def _anthropic(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)


def test_anthropic_messages(an: tuple[str, FakeAnthropicState]) -> None:
    url, state = an
    client = _anthropic(url)
    message = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=USER)
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn" and message.usage.input_tokens == 2
    assert (
        state.requests[-1].headers["authorization"] == "Bearer sk-ant-test"
    )  # SDK 2.x: no x-api-key
    tools: Any = [{"name": "search", "input_schema": {"type": "object"}}]
    with client.messages.stream(model="c", max_tokens=64, messages=USER, tools=tools) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    assert final.content[0].input == {"query": "hello there"}
    result: Any = [
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}],
        }
    ]
    after_tool = client.messages.create(model="c", max_tokens=64, messages=result)
    assert after_tool.content[0].type == "text" and after_tool.content[0].text == "tool said: sunny"
    events = [
        e.type for e in client.messages.create(model="c", max_tokens=9, messages=USER, stream=True)
    ]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    with pytest.raises(httpx2.RemoteProtocolError):  # anthropic 2.x does not wrap stream errors
        list(
            client.messages.create(
                model="c",
                max_tokens=9,
                messages=USER,
                stream=True,
                extra_headers={"x-fake-cut-after": "2"},
            )
        )
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="fail-429", max_tokens=9, messages=USER)
    with httpx.Client(base_url=url) as http:
        denied = http.post("/v1/messages", json={"model": "c", "max_tokens": 9, "messages": USER})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"


def test_litellm_anthropic(an: tuple[str, FakeAnthropicState]) -> None:
    import litellm

    url, state = an

    async def run() -> tuple[Any, str]:
        common: Any = {
            "model": "anthropic/claude-3-5-haiku-20241022",
            "api_base": url,
            "api_key": "sk-ant-test",
            "messages": USER,
        }
        done = await litellm.acompletion(**common)
        stream = await litellm.acompletion(**common, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        return done, text

    done, text = asyncio.run(run())
    assert done.choices[0].message.content == "echo: hello there"
    assert text == "echo: hello there"
    assert {r.path for r in state.requests} == {"/v1/messages"}


def _sse(text: str) -> list[Any]:
    blocks = [b.split("\n") for b in text.strip().split("\n\n")]
    data = [line[6:] for lines in blocks for line in lines if line.startswith("data: ")]
    return [json.loads(d) for d in data if d != "[DONE]"]


def _strict(kind: Any, *payloads: Any) -> None:
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(kind)
    for payload in payloads:
        adapter.validate_python(payload)


def test_openai_shapes_validate_strictly(oa: tuple[openai.OpenAI, FakeOpenAIState]) -> None:
    """The SDKs parse leniently; validating against their types catches what they would not."""
    client, _ = oa
    streamed = {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=str(client.base_url)) as http:
        for extra in ({}, {"tools": TOOLS}, {"n": 2}):
            body = {"model": "m", "messages": USER, **extra}
            _strict(ChatCompletion, http.post("chat/completions", json=body).json())
            chunks = _sse(http.post("chat/completions", json={**body, **streamed}).text)
            _strict(ChatCompletionChunk, *chunks)
        _strict(Completion, http.post("completions", json={"model": "m", "prompt": "a"}).json())
        embedded = http.post("embeddings", json={"model": "m", "input": "a"}).json()
        _strict(CreateEmbeddingResponse, embedded)
        tools = [{"type": "function", "name": "f", "parameters": {}, "strict": True}]
        for extra in ({}, {"tools": tools}):
            body = {"model": "m", "input": "hi", **extra}
            _strict(Response, http.post("responses", json=body).json())
            events = _sse(http.post("responses", json={**body, "stream": True}).text)
            _strict(ResponseStreamEvent, *events)
        _strict(list[Model], http.get("models").json()["data"])
        upload = {"file": ("t.jsonl", json.dumps(TRAIN_LINE).encode())}
        file = http.post("files", files=upload, data={"purpose": "fine-tune"}).json()
        _strict(FileObject, file)
        job_id = client.fine_tuning.jobs.create(training_file=file["id"], model="m").id
        _strict(FineTuningJob, _wait(client, job_id).to_dict())
        _strict(
            list[FineTuningJobEvent], http.get(f"fine_tuning/jobs/{job_id}/events").json()["data"]
        )
        checkpoints = http.get(f"fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        _strict(list[FineTuningJobCheckpoint], checkpoints)


def test_anthropic_shapes_validate_strictly(an: tuple[str, FakeAnthropicState]) -> None:
    url, _ = an
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    tools = [{"name": "s", "input_schema": {"type": "object"}}]
    with httpx.Client(base_url=url, headers=headers) as http:
        for extra in ({}, {"tools": tools}):
            body = {"model": "c", "max_tokens": 9, "messages": USER, **extra}
            _strict(Message, http.post("/v1/messages", json=body).json())
            events = _sse(http.post("/v1/messages", json={**body, "stream": True}).text)
            assert events[2] == {"type": "ping"}  # the SDK drops pings; not in its union
            _strict(RawMessageStreamEvent, *(e for e in events if e["type"] != "ping"))


def test_serve_app_stops() -> None:
    port = free_port()
    with serve_app(create_openai_app(), port=port) as url:
        assert httpx.get(url + "/health").json() == {"status": "ok"}
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
