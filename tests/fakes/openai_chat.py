"""Chat Completions and legacy Completions of the fake OpenAI upstream.

Answers are built from the last message: the scripted answers of :mod:`.synthesis` to the
two prompts of `tuneloop synthesize`, else ``echo: T`` for text T, ``tool said: T`` after a
tool message, a call to the first (or the forced) tool when ``tools`` are given and the last
message is the user's, ``{"echo": "T"}`` for JSON response formats. Choice i > 0 gets " (i)".
``state.model_replies[model]`` replaces the text answer of that model (a better or worse one);
``state.judges[model]`` makes the model a scriptable judge (:mod:`.judge`);
``state.model_usage[model] = (prompt, completion[, cached])`` fixes the usage it reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Any, TypeVar

from starlette.responses import Response

from .common import (
    Call,
    FakeStateBase,
    SSEResponse,
    as_dict,
    dumps,
    json_response,
    sse_data,
)
from .synthesis import synthesis_reply
from .text import split_pieces, truncate_at_stop, truncate_words, word_count

FINGERPRINT = "fp_tuneloop_fake"
DONE = b"data: [DONE]\n\n"
_T = TypeVar("_T")


@dataclass(slots=True, frozen=True)
class ChatChoice:
    content: str | None
    finish_reason: str = "stop"
    tool_name: str | None = None
    arguments: str = ""
    call_id: str = ""

    @property
    def tokens(self) -> int:
        return max(1, word_count(self.content or self.arguments))


def content_text(content: object) -> str:
    """Text of a message's content: a string or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and 0 < n <= 128 else 1


def _chosen_tool(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    forced = as_dict(as_dict(choice).get("function")).get("name")
    if forced is not None:
        return str(forced)
    first = as_dict(tools[0])
    return str(as_dict(first.get("function")).get("name") or first.get("name", "tool"))


def _wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _text_choice(body: dict[str, Any], text: str) -> ChatChoice:
    text, _ = truncate_at_stop(text, body.get("stop"))
    text, cut = truncate_words(text, body.get("max_completion_tokens") or body.get("max_tokens"))
    return ChatChoice(text, "length" if cut else "stop")


def chat_choices(body: dict[str, Any], state: FakeStateBase) -> list[ChatChoice]:
    messages = _messages(body)
    last = messages[-1] if messages else {}
    role, text = last.get("role"), content_text(last.get("content"))
    tool = _chosen_tool(body) if role == "user" else None
    scripted = synthesis_reply(text) if role == "user" and tool is None else None
    judge = state.judges.get(str(body.get("model")))
    if judge is not None:
        return [_text_choice(body, judge.reply(messages)) for _ in range(_count(body))]
    choices = []
    for i in range(_count(body)):
        variant = text if i == 0 else f"{text} ({i})"
        if tool is not None:
            args = dumps({"query": variant}).decode()
            choices.append(
                ChatChoice(None, "tool_calls", tool, args, f"call_{next(state.counter)}")
            )
        elif _wants_json(body):
            choices.append(ChatChoice(dumps({"echo": variant}).decode()))
        elif scripted is not None:
            choices.append(_text_choice(body, scripted))
        else:
            prefix = "tool said: " if role == "tool" else "echo: "
            fixed = state.model_replies.get(str(body.get("model")))
            choices.append(_text_choice(body, prefix + variant if fixed is None else fixed))
    return choices


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_usage(body: dict[str, Any], choices: list[ChatChoice],
               state: FakeStateBase | None = None) -> dict[str, Any]:
    fixed = None if state is None else state.model_usage.get(str(body.get("model")))
    if fixed is not None:
        return usage(*fixed)
    prompt = max(1, sum(word_count(content_text(m.get("content"))) for m in _messages(body)))
    return usage(prompt, sum(c.tokens for c in choices))


def _tool_call(choice: ChatChoice) -> dict[str, Any]:
    function = {"name": choice.tool_name, "arguments": choice.arguments}
    return {"id": choice.call_id, "type": "function", "function": function}


def _message(choice: ChatChoice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content,
        "refusal": None,
        "annotations": [],
    }
    if choice.tool_name is not None:
        message["tool_calls"] = [_tool_call(choice)]
    return message


def _envelope(call_id: str, obj: str, created: int, model: object) -> dict[str, Any]:
    return {
        "id": call_id,
        "object": obj,
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def chat_completion(
    body: dict[str, Any], choices: list[ChatChoice], state: FakeStateBase
) -> dict[str, Any]:
    result = _envelope(
        state.next_id("chatcmpl-"), "chat.completion", state.now(), body.get("model")
    )
    result["choices"] = [
        {"index": i, "message": _message(c), "logprobs": None, "finish_reason": c.finish_reason}
        for i, c in enumerate(choices)
    ]
    result["usage"] = chat_usage(body, choices, state)
    return result


def _choice_deltas(choice: ChatChoice) -> list[tuple[dict[str, Any], str | None]]:
    deltas: list[tuple[dict[str, Any], str | None]] = []
    if choice.tool_name is None:
        deltas.append(({"role": "assistant", "content": "", "refusal": None}, None))
        deltas.extend(({"content": piece}, None) for piece in split_pieces(choice.content or ""))
    else:
        first = {
            **_tool_call(choice),
            "index": 0,
            "function": {"name": choice.tool_name, "arguments": ""},
        }
        deltas.append(({"role": "assistant", "content": None, "refusal": None}, None))
        deltas.append(({"tool_calls": [first]}, None))
        deltas.extend(
            ({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
            for piece in split_pieces(choice.arguments, 3)
        )
    deltas.append(({}, choice.finish_reason))
    return deltas


def interleave(lists: list[list[_T]]) -> list[_T]:
    """Round-robin merge, as OpenAI interleaves the chunks of n > 1 choices."""
    return [item for item in chain.from_iterable(zip_longest(*lists)) if item is not None]


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def chat_stream_events(
    body: dict[str, Any], choices: list[ChatChoice], state: FakeStateBase
) -> list[bytes]:
    head = _envelope(
        state.next_id("chatcmpl-"), "chat.completion.chunk", state.now(), body.get("model")
    )
    with_usage = _include_usage(body)
    if with_usage:
        head["usage"] = None
    per_choice = [[(i, d, f) for d, f in _choice_deltas(c)] for i, c in enumerate(choices)]
    events = [
        sse_data(
            {**head, "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": f}]}
        )
        for i, d, f in interleave(per_choice)
    ]
    if with_usage:
        events.append(sse_data({**head, "choices": [], "usage": chat_usage(body, choices, state)}))
    events.append(DONE)
    return events


async def chat_completions(call: Call, state: FakeStateBase) -> Response:
    body = call.data
    choices = chat_choices(body, state)
    if body.get("stream"):
        return SSEResponse(chat_stream_events(body, choices, state))
    return json_response(chat_completion(body, choices, state))


def prompts(prompt: object) -> list[str]:
    """Normalise a legacy prompt (string, strings, token array, token arrays) to strings."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        return [""]
    if all(isinstance(p, int) for p in prompt):
        return [" ".join(map(str, prompt))]
    return [
        p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else ""
        for p in prompt
    ]


def completion_texts(body: dict[str, Any], fixed: str | None = None) -> list[tuple[str, str]]:
    """(text, finish_reason) per choice: `` echo: <last 5 prompt words>`` (or `fixed`)."""
    result = []
    for prompt in prompts(body.get("prompt")):
        tail = " ".join(prompt.split()[-5:])
        for j in range(_count(body)):
            text = f" echo: {tail}" if j == 0 else f" echo: {tail} ({j})"
            text = text if fixed is None else fixed
            choice = _text_choice(body, text)
            prefix = prompt if body.get("echo") else ""
            result.append((prefix + (choice.content or ""), choice.finish_reason))
    return result


def completion_usage(body: dict[str, Any], texts: list[tuple[str, str]]) -> dict[str, Any]:
    prompt = max(1, sum(word_count(p) for p in prompts(body.get("prompt"))))
    return usage(prompt, sum(max(1, word_count(t)) for t, _ in texts))


def _text_choice_obj(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def completion_stream_events(
    body: dict[str, Any], texts: list[tuple[str, str]], state: FakeStateBase
) -> list[bytes]:
    head = _envelope(state.next_id("cmpl-"), "text_completion", state.now(), body.get("model"))
    del head["service_tier"]
    per_choice = [
        [(i, piece, None) for piece in split_pieces(text)] + [(i, "", finish)]
        for i, (text, finish) in enumerate(texts)
    ]
    events = [
        sse_data({**head, "choices": [_text_choice_obj(*item)]}) for item in interleave(per_choice)
    ]
    if _include_usage(body):
        events.append(sse_data({**head, "choices": [], "usage": completion_usage(body, texts)}))
    events.append(DONE)
    return events


async def completions(call: Call, state: FakeStateBase) -> Response:
    body = call.data
    texts = completion_texts(body, state.model_replies.get(str(body.get("model"))))
    if body.get("stream"):
        return SSEResponse(completion_stream_events(body, texts, state))
    result = _envelope(state.next_id("cmpl-"), "text_completion", state.now(), body.get("model"))
    del result["service_tier"]
    result["choices"] = [
        _text_choice_obj(i, text, finish) for i, (text, finish) in enumerate(texts)
    ]
    result["usage"] = completion_usage(body, texts)
    return json_response(result)
