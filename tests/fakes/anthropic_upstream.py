"""Fake Anthropic Messages API upstream.

``POST /v1/messages`` needs ``x-api-key`` (litellm) or ``authorization: Bearer`` (the anthropic
SDK 2.x sends its api_key that way) and ``anthropic-version`` (401 otherwise) and
answers ``echo: <last user text>``; ``tool said: <result>`` after a tool_result block; a
``tool_use`` block calling the first (or forced) tool when ``tools`` are given; streams with
Anthropic's event sequence. Anything else under /v1 echoes the request. Failure injection
as in :mod:`tests.fakes.common`, with Anthropic-shaped error bodies.

litellm (1.110) with ``api_base="http://127.0.0.1:PORT"`` and model ``anthropic/...`` posts
to ``http://127.0.0.1:PORT/v1/messages`` (it appends ``/v1/messages`` to a bare base URL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from .common import (
    ALL_METHODS,
    Call,
    FakeApp,
    FakeStateBase,
    RawHeaders,
    SSEResponse,
    as_dict,
    bind,
    dumps,
    echo,
    endpoint,
    health,
    json_response,
    sse_event,
)
from .text import split_pieces, truncate_at_stop, truncate_words, word_count

_ERRORS = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
)


@dataclass
class FakeAnthropicState(FakeStateBase):
    """Everything the fake Anthropic remembers; pass it to :func:`create_app`."""


@dataclass(slots=True, frozen=True)
class Reply:
    text: str
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    tool: str | None = None
    tool_id: str = ""

    def block(self) -> dict[str, Any]:
        if self.tool is None:
            return {"type": "text", "text": self.text}
        return {
            "type": "tool_use",
            "id": self.tool_id,
            "name": self.tool,
            "input": {"query": self.text},
        }


def anthropic_error_body(status: int, message: str | None) -> dict[str, Any]:
    kind = _ERRORS.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": kind, "message": message or f"{kind} (fake upstream)"},
    }


def anthropic_error(status: int, message: str) -> Response:
    return json_response(anthropic_error_body(status, message), status)


def block_text(content: object, kind: str = "text") -> str:
    """Text of string content, or of the blocks of one type (tool_result content included)."""
    if isinstance(content, str):
        return content if kind == "text" else ""
    blocks = (
        [b for b in content if isinstance(b, dict) and b.get("type") == kind]
        if isinstance(content, list)
        else []
    )
    if kind == "tool_result":
        return " ".join(block_text(b.get("content")) for b in blocks)
    return " ".join(str(b.get("text", "")) for b in blocks)


def _chosen_tool(body: dict[str, Any]) -> str | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = as_dict(body.get("tool_choice"))
    if not tools or choice.get("type") == "none":
        return None
    return str(choice.get("name") or tools[0].get("name"))


def reply(body: dict[str, Any], state: FakeStateBase) -> Reply:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    result = block_text(last.get("content"), "tool_result")
    if result:
        return _text_reply(body, f"tool said: {result}")
    text = block_text(last.get("content"))
    tool = _chosen_tool(body) if last.get("role") == "user" else None
    if tool is not None:
        return Reply(text, "tool_use", None, tool, state.next_id("toolu_"))
    return _text_reply(body, f"echo: {text}")


def _text_reply(body: dict[str, Any], text: str) -> Reply:
    text, hit = truncate_at_stop(text, body.get("stop_sequences"))
    text, cut = truncate_words(text, body.get("max_tokens"))
    return Reply(text, "max_tokens" if cut else "stop_sequence" if hit else "end_turn", hit)


def input_tokens(body: dict[str, Any]) -> int:
    texts = [block_text(body.get("system"))]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            content = message.get("content")
            texts += [block_text(content), block_text(content, "tool_result")]
    return max(1, sum(map(word_count, texts)))


def usage(body: dict[str, Any], rep: Reply | None) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens(body),
        "output_tokens": max(1, word_count(rep.text)) if rep is not None else 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def message(body: dict[str, Any], msg_id: str, rep: Reply | None) -> dict[str, Any]:
    """The Message; ``rep`` None gives the empty one of ``message_start``."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [rep.block()] if rep is not None else [],
        "stop_reason": rep.stop_reason if rep is not None else None,
        "stop_sequence": rep.stop_sequence if rep is not None else None,
        "usage": usage(body, rep),
    }


def _deltas(rep: Reply) -> list[dict[str, Any]]:
    if rep.tool is None:
        return [{"type": "text_delta", "text": piece} for piece in split_pieces(rep.text)]
    arguments = dumps({"query": rep.text}).decode()
    return [
        {"type": "input_json_delta", "partial_json": piece} for piece in split_pieces(arguments, 3)
    ]


def stream_events(body: dict[str, Any], msg_id: str, rep: Reply) -> list[bytes]:
    start_block = {"type": "text", "text": ""} if rep.tool is None else {**rep.block(), "input": {}}
    events = [
        sse_event(
            "message_start", {"type": "message_start", "message": message(body, msg_id, None)}
        ),
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": start_block},
        ),
        sse_event("ping", {"type": "ping"}),
    ]
    events += [
        sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
        for delta in _deltas(rep)
    ]
    final_usage = {"output_tokens": usage(body, rep)["output_tokens"]}
    stop = {"stop_reason": rep.stop_reason, "stop_sequence": rep.stop_sequence}
    events += [
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse_event("message_delta", {"type": "message_delta", "delta": stop, "usage": final_usage}),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def _check(call: Call) -> Response | None:
    headers = call.request.headers
    if not headers.get("x-api-key") and not headers.get("authorization", "").startswith("Bearer "):
        return anthropic_error(401, "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return anthropic_error(401, "anthropic-version header is required")
    body = call.data
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return anthropic_error(400, f"{name}: Field required")
    return None


async def messages(call: Call, state: FakeAnthropicState) -> Response:
    if (problem := _check(call)) is not None:
        return problem
    body = call.data
    rep = reply(body, state)
    msg_id = state.next_id("msg_")
    if body.get("stream"):
        return SSEResponse(stream_events(body, msg_id, rep))
    return json_response(message(body, msg_id, rep))


def response_headers(state: FakeStateBase) -> Callable[[], RawHeaders]:
    static: RawHeaders = [
        (b"anthropic-ratelimit-requests-limit", b"4000"),
        (b"anthropic-ratelimit-requests-remaining", b"3999"),
        (b"anthropic-organization-id", b"tuneloop-fake"),
    ]

    def headers() -> RawHeaders:
        return [(b"request-id", f"req_{next(state.counter):024x}".encode()), *static]

    return headers


def create_app(state: FakeAnthropicState | None = None) -> Starlette:
    """The fake Anthropic ASGI app; its state is ``app.state.fake``."""
    state = state if state is not None else FakeAnthropicState()
    headers = response_headers(state)
    wrap = partial(endpoint, state, error_body=anthropic_error_body, base_headers=headers)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/messages", wrap(bind(messages, state)), methods=["POST"]),
        Route("/v1/{rest:path}", wrap(bind(echo, state)), methods=ALL_METHODS),
    ]
    app = FakeApp(routes, hot_paths=["/v1/messages"])
    app.state.fake = state
    return app
