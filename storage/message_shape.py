"""The shape of a message list a reviewer sends (review edits): chat messages as the OpenAI API
defines them, nothing deeper.

- a message: `role`, `content` (a string, a list of content parts, or null on an assistant
  message with tool calls), optional `name`, `tool_call_id`, `refusal` (strings),
  `tool_calls` (assistant only) and `function_call`;
- a content part: `{"type": str, ...}`; the known types are checked field by field (`text`,
  `refusal`, `image_url` `{"url", "detail"?}` or a URL string, `input_audio` `{"data",
  "format"}`, `file` `{"file_data"?, "file_id"?, "filename"?}`); other types (logged
  Responses-API parts) pass;
- a tool call: `{"id"?, "type"?, "function": {"name", "arguments"}}` (or a custom tool's
  `custom` object);
- any other key, anywhere, may carry at most `EXTRA_DEPTH` levels of nesting (an
  `annotations` list or a `cache_control` object, not a tower of brackets).

So a valid list nests at most 9 levels: whatever is stored can always be written back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tuneloop.errors import BadRequest

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
EXTRA_DEPTH = 3


def _fail(where: str, what: str) -> BadRequest:
    return BadRequest(f"{where} {what}", param="messages")


def _depth(value: Any, budget: int) -> bool:
    """Whether `value` nests at most `budget` levels of arrays/objects (stops early)."""
    if isinstance(value, dict):
        value = list(value.values())
    elif not isinstance(value, list):
        return True
    if budget == 0:
        return False
    return all(_depth(v, budget - 1) for v in value)


def _string(where: str, value: Any, *, optional: bool = True) -> None:
    if isinstance(value, str) or (optional and value is None):
        return
    raise _fail(where, "must be a string")


def _object(where: str, value: Any, fields: Mapping[str, bool]) -> None:
    """An object whose `fields` are strings (True: required); other keys are extras."""
    if not isinstance(value, dict):
        raise _fail(where, "must be an object")
    for key, required in fields.items():
        if required and key not in value:
            raise _fail(f"{where}.{key}", "is missing")
        _string(f"{where}.{key}", value.get(key))
    _extras(where, value, fields)


def _extras(where: str, value: dict[str, Any], known: Mapping[str, Any]) -> None:
    for key, item in value.items():
        if key not in known and not _depth(item, EXTRA_DEPTH):
            raise _fail(f"{where}.{key}", f"nests deeper than {EXTRA_DEPTH} levels")


def _image(where: str, value: Any) -> None:
    if not isinstance(value, str):  # a bare URL string is what some clients send
        _object(where, value, {"url": False, "detail": False})


PART_FIELDS: dict[str, Callable[[str, Any], None]] = {
    "text": lambda where, v: _string(where, v, optional=False),
    "refusal": lambda where, v: _string(where, v, optional=False),
    "image_url": _image,
    "input_audio": lambda where, v: _object(where, v, {"data": True, "format": True}),
    "file": lambda where, v: _object(where, v, {"file_data": False, "file_id": False,
                                                 "filename": False}),
}


def _part(where: str, part: Any) -> None:
    if not isinstance(part, dict):
        raise _fail(where, "must be a content part object")
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _fail(f"{where}.type", "must be a string")
    check = PART_FIELDS.get(kind)
    known: dict[str, Any] = {"type": None}
    if check is not None:
        known[kind] = None
        check(f"{where}.{kind}", part.get(kind))
    _extras(where, part, known)


def _tool_call(where: str, call: Any) -> None:
    if not isinstance(call, dict):
        raise _fail(where, "must be an object")
    _string(f"{where}.id", call.get("id"))
    _string(f"{where}.type", call.get("type"))
    if "custom" in call:
        _object(f"{where}.custom", call["custom"], {"name": True, "input": False})
    else:
        _object(f"{where}.function", call.get("function"), {"name": True, "arguments": False})
    _extras(where, call, {"id": None, "type": None, "function": None, "custom": None})


MESSAGE_KEYS = {"role": None, "content": None, "name": None, "tool_call_id": None,
                "refusal": None, "tool_calls": None, "function_call": None}


def check_message(where: str, message: Any) -> None:
    """A 400 naming the first field of `message` that is not a chat message's."""
    if not isinstance(message, dict):
        raise _fail(where, "must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise _fail(f"{where}.role", f"must be one of {', '.join(ROLES)}")
    content = message.get("content")
    calls = message.get("tool_calls")
    if content is None:
        if not (role == "assistant" and (calls or message.get("function_call"))):
            raise _fail(f"{where}.content", "is missing")
    elif isinstance(content, list):
        for number, part in enumerate(content):
            _part(f"{where}.content[{number}]", part)
    elif not isinstance(content, str):
        raise _fail(f"{where}.content", "must be a string or a list of parts")
    for key in ("name", "tool_call_id", "refusal"):
        _string(f"{where}.{key}", message.get(key))
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise _fail(f"{where}.tool_calls", "must be a list of objects on an assistant "
                        "message")
        for number, call in enumerate(calls):
            _tool_call(f"{where}.tool_calls[{number}]", call)
    if message.get("function_call") is not None:
        _object(f"{where}.function_call", message["function_call"],
                {"name": True, "arguments": False})
    _extras(where, message, MESSAGE_KEYS)
