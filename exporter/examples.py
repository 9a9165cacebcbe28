"""The exporter's input: one reviewed interaction as an OpenAI chat message list.

The review model (issue 3) owns how a logged interaction becomes a message list and how a
reviewer's revision changes it. The seam is :class:`Example`: the integration step builds one
per selected revision, e.g.::

    Example(
        interaction_id=row["id"],
        messages=revision["messages"],          # reviewed list: system/user/assistant/tool
        tools=row["request"].get("tools"),
        revision_id=revision["id"], revision=revision["number"],
        original=logged_messages[-1],           # the assistant answer as it was logged
        session_id=row["session_id"],
        label=revision.get("label"),
    )

Everything here is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

Message = dict[str, Any]

# Keys an OpenAI fine-tuning message may carry. Anything else is reported by validation.
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "weight", "function_call"}
)
# Response-only fields that chat completions return on an assistant message; dropped when
# empty (a non-empty refusal, say, stays and is reported as an unrecognized key).
RESPONSE_ONLY_KEYS = frozenset({"refusal", "annotations", "audio", "reasoning_content"})
_PLAIN_ROLES = frozenset({"system", "user", "assistant"})
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


class Example(NamedTuple):
    """One reviewed interaction, ready to format (an immutable record; cheap to build and to
    ship to pool workers as a JSON array).

    `messages` is the reviewed message list, ending with the assistant answer to learn.
    `original` is the assistant message as it was logged, before the reviewer's edit (only
    the `preference` format uses it). `label` is the class for the `classification` format
    (without it, the final assistant text is the label). `untrainable` says why the example
    has no final answer (an upstream error, a cut stream, an empty answer; see
    storage.trainable); such examples are skipped with a warning, not formatted. `endpoint`
    is the API the interaction was logged from (`chat.completions`, `completions`,
    `responses`; None when unknown): chat-shaped exports leave legacy `completions` rows out
    unless asked."""

    interaction_id: str
    messages: Sequence[Message]
    tools: Sequence[Mapping[str, Any]] | None = None
    revision_id: str | None = None
    revision: int | None = None
    original: Message | None = None
    session_id: str | None = None
    label: str | None = None
    parallel_tool_calls: bool | None = None
    untrainable: str | None = None
    endpoint: str | None = None


_ANSWER_KEYS = ("content", "tool_calls", "function_call")


def same_answer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two assistant messages say the same (text and tool calls; not e.g. weight)."""
    return all(a.get(key) == b.get(key) for key in _ANSWER_KEYS)


def answer_edited(example: Example) -> bool:
    """Whether the reviewer changed the final assistant answer (not only other messages, as
    a prompt's typo fixed): only then is the answer a person's, not the logged model's."""
    if example.original is None or not example.messages:
        return False
    answer = example.messages[-1]
    return answer.get("role") != "assistant" or not same_answer(
        clean_message(answer), clean_message(example.original))


def clean_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call as fine-tuning wants it: arguments are a JSON string, never an object."""
    out = {k: v for k, v in call.items() if v is not None}
    function = out.get("function")
    if isinstance(function, Mapping):
        function = {k: v for k, v in function.items() if v is not None}
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            function["arguments"] = orjson.dumps(arguments).decode()
        out["function"] = function
    return out


def clean_message(message: Mapping[str, Any]) -> Message:
    """Drop null and empty response-only fields; `developer` is written as `system`.

    Nothing with content is dropped: unknown keys stay, so validation can name them. A
    message that needs no change is returned as a copy of itself, cheaply."""
    if (
        len(message) == 2
        and isinstance(message.get("content"), str)
        and message.get("role") in _PLAIN_ROLES
    ):
        return dict(message)
    out: Message = {}
    for key, value in message.items():
        if value is None or (key in RESPONSE_ONLY_KEYS and not value):
            continue
        if key == "role" and value == "developer":
            value = "system"
        elif key == "tool_calls":
            if not value:
                continue
            value = [clean_tool_call(c) if isinstance(c, Mapping) else c for c in value]
        out[key] = value
    return out


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text")
        )
    return ""


def has_tool_use(message: Mapping[str, Any]) -> bool:
    return bool(message.get("tool_calls") or message.get("function_call"))


def normalize_text(text: str) -> bytes:
    """The text without whitespace, case folded, as UTF-8: equal for near duplicates.

    ASCII text (the common case) takes a fast byte path that gives the same result."""
    if text.isascii():
        return text.encode().lower().translate(None, _ASCII_WHITESPACE)
    return "".join(text.split()).casefold().encode()


def _message_parts(message: Mapping[str, Any], parts: list[str]) -> None:
    content, role = message.get("content"), message.get("role")
    if len(message) == 2 and type(content) is str and type(role) is str:  # the common case
        parts.append(role)
        parts.append(content)
        return
    parts.append(str(message.get("role", "")))
    parts.append(content_text(content))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            parts.append(str(function.get("name", "")))
            arguments = function.get("arguments", "")
            parts.append(
                arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
            )


def _hash_parts(parts: list[str]) -> int:
    digest = hashlib.blake2b(normalize_text("\x00".join(parts)), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def fingerprint(example: Example) -> int:
    """A 64-bit hash of the example's normalized text (whitespace removed, case folded):
    equal for exact duplicates and for copies that differ only in whitespace or case, which
    the split keeps on one side."""
    parts: list[str] = []
    for message in example.messages:
        _message_parts(message, parts)
    if example.label is not None:
        parts.append(example.label)
    return _hash_parts(parts)


def prompt_messages(messages: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """The prompt of a message list: without its final assistant turn (the answer)."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1]
    return messages


def prompt_fingerprint_of(messages: Sequence[Mapping[str, Any]]) -> int:
    """`prompt_fingerprint` of a prompt given as its messages (no final answer)."""
    parts: list[str] = ["prompt"]  # never equal to a whole example's fingerprint
    for message in messages:
        _message_parts(message, parts)
    return _hash_parts(parts)


def prompt_fingerprint(example: Example) -> int:
    """A 64-bit hash of the example's prompt (its messages without the final assistant
    answer, normalized as `fingerprint`): equal for one prompt answered twice (at a
    temperature above 0, or a reviewer's edit of one copy), which the split keeps on one side
    too, so validation never asks what train answered."""
    return prompt_fingerprint_of(prompt_messages(example.messages))
