"""Responses API and embeddings of the fake OpenAI upstream."""

from __future__ import annotations

import array
import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from .common import (
    Call,
    FakeStateBase,
    SSEResponse,
    dumps,
    json_response,
    sse_event,
)
from .openai_chat import content_text
from .text import split_pieces, word_count


@dataclass(slots=True)
class Sequencer:
    """Numbers the events of one Responses stream."""

    events: list[bytes] = field(default_factory=list)

    def emit(self, event_type: str, **fields: Any) -> None:
        payload = {"type": event_type, "sequence_number": len(self.events), **fields}
        self.events.append(sse_event(event_type, payload))


def input_text(value: object) -> tuple[str, str]:
    """(kind, text) of the last input item: kind is "user", "tool" or another role."""
    if isinstance(value, str):
        return "user", value
    items = [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    if not items:
        return "user", ""
    last = items[-1]
    if last.get("type") == "function_call_output":
        return "tool", content_text(last.get("output"))
    return str(last.get("role", "user")), content_text(last.get("content"))


def input_words(body: dict[str, Any]) -> int:
    value = body.get("input")
    items = value if isinstance(value, list) else [{"content": value}]
    texts = [content_text(i.get("content", i.get("output"))) for i in items if isinstance(i, dict)]
    return max(1, sum(map(word_count, texts)) + word_count(content_text(body.get("instructions"))))


def _function_tool(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or body.get("tool_choice") == "none":
        return None
    names = [t.get("name") for t in tools if isinstance(t, dict) and t.get("type") == "function"]
    return str(names[0]) if names else None


def _wants_json(body: dict[str, Any]) -> bool:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [] if status == "in_progress" else [output_text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def function_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


@dataclass(slots=True, frozen=True)
class Answer:
    """What the fake model says: text, or a function call with arguments."""

    item_id: str
    text: str
    tool: str | None = None
    call_id: str = ""

    def item(self, status: str = "completed") -> dict[str, Any]:
        if self.tool is None:
            return message_item(self.item_id, self.text, status)
        arguments = "" if status == "in_progress" else self.text
        return function_item(self.item_id, self.call_id, self.tool, arguments, status)


def answer(body: dict[str, Any], state: FakeStateBase) -> Answer:
    kind, text = input_text(body.get("input"))
    tool = _function_tool(body) if kind == "user" else None
    if tool is not None:
        arguments = dumps({"query": text}).decode()
        return Answer(state.next_id("fc_"), arguments, tool, f"call_{next(state.counter)}")
    if _wants_json(body):
        return Answer(state.next_id("msg_"), dumps({"echo": text}).decode())
    prefix = "tool said: " if kind == "tool" else "echo: "
    return Answer(state.next_id("msg_"), prefix + text)


def response_usage(body: dict[str, Any], ans: Answer) -> dict[str, Any]:
    prompt, completion = input_words(body), max(1, word_count(ans.text))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    body: dict[str, Any], rid: str, created: int, ans: Answer | None
) -> dict[str, Any]:
    """The Response; ``ans`` None gives the in-progress snapshot sent at the start of a stream."""
    done = ans is not None
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "completed" if done else "in_progress",
        "background": False,
        "completed_at": created if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body.get("model"),
        "output": [ans.item()] if ans is not None else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": response_usage(body, ans) if ans is not None else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _emit_message(seq: Sequencer, ans: Answer) -> None:
    where = {"item_id": ans.item_id, "output_index": 0, "content_index": 0}
    seq.emit("response.content_part.added", **where, part=output_text_part(""))
    for piece in split_pieces(ans.text):
        seq.emit("response.output_text.delta", **where, delta=piece, logprobs=[])
    seq.emit("response.output_text.done", **where, text=ans.text, logprobs=[])
    seq.emit("response.content_part.done", **where, part=output_text_part(ans.text))


def _emit_function_call(seq: Sequencer, ans: Answer) -> None:
    where = {"item_id": ans.item_id, "output_index": 0}
    for piece in split_pieces(ans.text, 3):
        seq.emit("response.function_call_arguments.delta", **where, delta=piece)
    seq.emit("response.function_call_arguments.done", **where, name=ans.tool, arguments=ans.text)


def response_stream_events(
    body: dict[str, Any], rid: str, created: int, ans: Answer
) -> list[bytes]:
    seq = Sequencer()
    started = response_object(body, rid, created, None)
    seq.emit("response.created", response=started)
    seq.emit("response.in_progress", response=started)
    seq.emit("response.output_item.added", output_index=0, item=ans.item("in_progress"))
    (_emit_message if ans.tool is None else _emit_function_call)(seq, ans)
    seq.emit("response.output_item.done", output_index=0, item=ans.item())
    seq.emit("response.completed", response=response_object(body, rid, created, ans))
    return seq.events


async def responses(call: Call, state: FakeStateBase) -> Response:
    body = call.data
    ans = answer(body, state)
    rid, created = state.next_id("resp_"), state.now()
    if body.get("stream"):
        return SSEResponse(response_stream_events(body, rid, created, ans))
    return json_response(response_object(body, rid, created, ans))


def embedding_inputs(value: object) -> list[str]:
    """Strings to embed from a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return [""]
    if all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    return [
        v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else ""
        for v in value
    ]


def embedding_vector(text: str, dimensions: int) -> array.array[float]:
    """A unit float32 vector that depends only on the text and the dimension."""
    digest = b""
    block = 0
    while len(digest) < dimensions * 2:
        digest += hashlib.blake2b(f"{block}:{text}".encode(), digest_size=64).digest()
        block += 1
    raw = [
        int.from_bytes(digest[2 * i : 2 * i + 2], "little") / 32767.5 - 1.0
        for i in range(dimensions)
    ]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return array.array("f", [x / norm for x in raw])


def _encode(vector: array.array[float], encoding: object) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.tobytes()).decode()
    return vector.tolist()


async def embeddings(call: Call, state: FakeStateBase) -> Response:
    body = call.data
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else 8
    texts = embedding_inputs(body.get("input"))
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _encode(embedding_vector(t, dims), body.get("encoding_format")),
        }
        for i, t in enumerate(texts)
    ]
    tokens = max(1, sum(map(word_count, texts)))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response(
        {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    )
