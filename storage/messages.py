"""The message list a reviewer works on, derived from a logged interaction (pure functions).

- chat: the request's messages plus the assistant message of choice 0 (tool calls included);
  choices 1..n-1 are offered as alternatives;
- legacy completion: `[user: prompt, assistant: text]` (other choices are alternatives);
- responses: the instructions and input items as chat messages, then the output items;
- embeddings: not reviewable.

The exporter reuses `messages_of` to build training examples, so it must stay pure and total:
any logged request/response (even malformed, cut or failed) gives a list, never an exception,
except for endpoints that are not reviewable at all.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from storage.message_shape import check_message
from tuneloop.errors import BadRequest

Message = dict[str, Any]
REVIEWABLE_ENDPOINTS = ("chat.completions", "completions", "responses")
MAX_MESSAGES = 2000
MAX_MESSAGES_BYTES = 8 * 1024 * 1024


class NotReviewable(BadRequest):
    code = "not_reviewable"


def is_reviewable(endpoint: str | None) -> bool:
    return endpoint in REVIEWABLE_ENDPOINTS


def messages_of(endpoint: str, request: Any, response: Any) -> tuple[list[Message], list[Message]]:
    """(messages, alternatives) of one logged interaction. `request` and `response` are the
    parsed JSON columns (dicts, or None when nothing was logged)."""
    if endpoint == "chat.completions":
        return _chat(_as_dict(request), _as_dict(response))
    if endpoint == "completions":
        return _completion(_as_dict(request), _as_dict(response))
    if endpoint == "responses":
        return _responses(_as_dict(request), _as_dict(response)), []
    raise NotReviewable(f"{endpoint} interactions are not reviewable (no message list)")


def json_text(value: Any) -> str:
    """JSON text of a parsed value; integers beyond 64 bits (valid JSON, which orjson won't
    write) go through the standard library."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _choices(response: dict[str, Any]) -> list[dict[str, Any]]:
    choices = response.get("choices")
    if not isinstance(choices, list):
        return []
    valid = [c for c in choices if isinstance(c, dict)]
    return sorted(valid, key=_choice_index)


def _choice_index(choice: dict[str, Any]) -> int:
    index = choice.get("index")
    return index if isinstance(index, int) else 0


# -- chat -------------------------------------------------------------------------------------
def _chat(request: dict[str, Any], response: dict[str, Any]) -> tuple[list[Message], list[Message]]:
    raw = request.get("messages")
    messages = [dict(m) for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    answers = [a for a in map(_assistant_of_choice, _choices(response)) if a is not None]
    if answers:
        messages.append(answers[0])
    return messages, answers[1:]


def _assistant_of_choice(choice: dict[str, Any]) -> Message | None:
    message = choice.get("message")
    if not isinstance(message, dict):
        return None
    answer: Message = {"role": "assistant", "content": message.get("content")}
    for key in ("tool_calls", "function_call"):
        if message.get(key):
            answer[key] = message[key]
    if message.get("refusal"):
        answer["refusal"] = message["refusal"]
    return answer


# -- legacy completions -----------------------------------------------------------------------
def _completion(request: dict[str, Any],
                response: dict[str, Any]) -> tuple[list[Message], list[Message]]:
    prompt = request.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = prompt[0]  # one prompt per interaction is what a reviewer can judge
    if not isinstance(prompt, str):
        prompt = "" if prompt is None else json_text(prompt)  # token arrays
    messages: list[Message] = [{"role": "user", "content": prompt}]
    texts = [c.get("text") for c in _choices(response)]
    answers: list[Message] = [
        {"role": "assistant", "content": t} for t in texts if isinstance(t, str)
    ]
    if answers:
        messages.append(answers[0])
    return messages, answers[1:]


# -- responses --------------------------------------------------------------------------------
def _responses(request: dict[str, Any], response: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = request.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        _append_items(messages, items)
    output = response.get("output")
    if isinstance(output, list):
        _append_items(messages, output)
    return messages


def _append_items(messages: list[Message], items: list[Any]) -> None:
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            content = _response_content(item.get("content"))
            messages.append({"role": item["role"], "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") \
                    and last.get("content") is None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str)
                             else _response_content(output)})
        # reasoning, web search and other tool items carry no reviewable conversation text


def _response_content(content: Any) -> Any:
    """Input/output parts as chat content: text parts become one string, images stay parts."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        return json_text(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal") or ""})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url")}})
        else:
            parts.append(part)
    if all(p.get("type") == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


# -- text and validation ----------------------------------------------------------------------
def message_text(messages: list[Message]) -> str:
    """All readable text of a message list (content, tool names and arguments), for search."""
    pieces: list[str] = []
    for message in messages:
        pieces.append(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                pieces.extend(str(function.get(k) or "") for k in ("name", "arguments"))
    return "\n".join(p for p in pieces if p)


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def validate_messages(value: Any) -> list[Message]:
    """A message list a reviewer sends (edit): a clear 400 for anything malformed or not
    shaped as chat messages (storage.message_shape)."""
    if not isinstance(value, list) or not value:
        raise BadRequest("messages must be a non-empty list of message objects", param="messages")
    if len(value) > MAX_MESSAGES:
        raise BadRequest(f"messages has more than {MAX_MESSAGES} entries", param="messages")
    for number, message in enumerate(value):
        check_message(f"messages[{number}]", message)  # roles, content, parts, tool calls
    if len(json_text(value).encode()) > MAX_MESSAGES_BYTES:
        raise BadRequest(f"messages is larger than {MAX_MESSAGES_BYTES} bytes", param="messages")
    if value[-1].get("role") != "assistant":
        raise BadRequest("the last of the messages must be the assistant's answer",
                         param="messages")
    return [dict(m) for m in value]
