"""Per-row validation of fine-tuning rows, and the finding/tally types of the report.

The chat checks are those of OpenAI's "Data preparation and analysis for chat model
fine-tuning" recipe (data_type, missing_messages_list, message_missing_key,
message_unrecognized_key, unrecognized_role, missing_content,
example_missing_assistant_message, and the missing system/user counts), extended to what the
current format allows (tool calls, tool results, `weight`, `tools`). They look at the row
only, so they also apply to a JSONL file that tuneloop did not write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from exporter.examples import MESSAGE_KEYS, content_text, has_tool_use

Severity = Literal["error", "warning", "info"]
SAMPLE_IDS = 20
ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
CHAT_ROW_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PLAIN_ROLES = frozenset({"system", "user", "assistant"})
_PLAIN = frozenset({"role", "content"})

CHECKS: Mapping[str, tuple[Severity, str]] = MappingProxyType(
    {
        "data_type": ("error", "the example is not a JSON object"),
        "missing_messages_list": ("error", "the example has no `messages` list"),
        "message_missing_key": (
            "error",
            "a message lacks `role`, or lacks `content` without making a tool call",
        ),
        "message_unrecognized_key": (
            "error",
            "a message has a key other than " + ", ".join(sorted(MESSAGE_KEYS)),
        ),
        "unrecognized_role": ("error", "a role other than " + ", ".join(sorted(ROLES))),
        "missing_content": (
            "error",
            "a message has no text and no tool call, or content that is not text or parts",
        ),
        "example_missing_assistant_message": ("error", "no assistant message to learn from"),
        "invalid_weight": ("error", "`weight` must be 0 or 1, on assistant messages only"),
        "invalid_tool_call": (
            "error",
            "a tool call lacks an id, type `function`, a name, or string arguments",
        ),
        "unmatched_tool_result": (
            "error",
            "a tool message whose tool_call_id answers no earlier tool call",
        ),
        "invalid_tools": ("error", "`tools` is not a list of {type: function, function: {name}}"),
        "unrecognized_example_key": (
            "error",
            "the example has a key other than " + ", ".join(sorted(CHAT_ROW_KEYS)),
        ),
        "missing_system_message": ("warning", "examples without a system message"),
        "missing_user_message": ("warning", "examples without a user message"),
        "last_message_not_assistant": (
            "warning",
            "examples that end after the last assistant message (the tail teaches nothing)",
        ),
        "missing_preference_key": (
            "error",
            "a preference example lacks input, preferred_output or non_preferred_output",
        ),
        "invalid_preference_output": (
            "error",
            "a preference output is not a list of one assistant message",
        ),
        "identical_preference_outputs": ("error", "preferred and non-preferred are the same"),
        "preference_input_ends_with_assistant": (
            "error",
            "a preference input must end with a user or tool message",
        ),
        "necessary_column": ("error", "`prompt` or `completion` is missing or not text"),
        "additional_column": ("warning", "keys other than prompt and completion"),
    }
)


@dataclass(slots=True)
class Tally:
    """How many examples broke a rule, and the first few of their ids."""

    count: int = 0
    ids: list[str] = field(default_factory=list)

    def add(self, example_id: str) -> None:
        self.count += 1
        if len(self.ids) < SAMPLE_IDS:
            self.ids.append(example_id)

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.ids.extend(other.ids[: SAMPLE_IDS - len(self.ids)])


def merge_tallies(into: dict[str, Tally], other: Mapping[str, Tally]) -> None:
    for code, tally in other.items():
        into.setdefault(code, Tally()).merge(tally)


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    message: str
    count: int = 0
    examples: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "examples": list(self.examples),
        }


def finding_from_tally(code: str, tally: Tally) -> Finding:
    severity, message = CHECKS.get(code, ("error", code.replace("_", " ")))
    return Finding(code, severity, message, tally.count, tuple(tally.ids))


def _tool_call_ok(call: Any) -> bool:
    if not isinstance(call, dict) or not isinstance(call.get("id"), str):
        return False
    function = call.get("function")
    return (
        call.get("type", "function") == "function"
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments", ""), str)
    )


def _message_problems(message: Any, call_ids: set[str], codes: set[str]) -> None:
    if not isinstance(message, dict):
        codes.add("data_type")
        return
    role = message.get("role")
    content = message.get("content")
    if type(content) is str and content and role in _PLAIN_ROLES and message.keys() <= _PLAIN:
        return  # the common case: nothing to check further
    calls = has_tool_use(message)
    if "role" not in message or ("content" not in message and not calls):
        codes.add("message_missing_key")
    if not message.keys() <= MESSAGE_KEYS:
        codes.add("message_unrecognized_key")
    if role not in ROLES:
        codes.add("unrecognized_role")
    malformed = content is not None and not isinstance(content, (str, list))
    if malformed or (not content_text(content) and not calls and role != "tool"):
        codes.add("missing_content")
    if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
        codes.add("invalid_weight")
    for call in message.get("tool_calls") or ():
        if _tool_call_ok(call):
            call_ids.add(call["id"])
        else:
            codes.add("invalid_tool_call")
    if role == "tool" and message.get("tool_call_id") not in call_ids:
        codes.add("unmatched_tool_result")


def _tools_ok(tools: Any) -> bool:
    return isinstance(tools, list) and all(
        isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    )


def messages_problems(messages: Sequence[Any], codes: set[str]) -> None:
    call_ids: set[str] = set()
    for message in messages:
        _message_problems(message, call_ids, codes)


def chat_row_problems(row: Any) -> list[str]:
    """Codes of every rule the row breaks (errors and warnings), sorted."""
    if not isinstance(row, dict):
        return ["data_type"]
    messages = row.get("messages")
    if not messages or not isinstance(messages, list):
        return ["missing_messages_list"]
    codes: set[str] = set()
    messages_problems(messages, codes)
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        codes.add("example_missing_assistant_message")
    elif roles[-1] != "assistant":
        codes.add("last_message_not_assistant")
    if "system" not in roles:
        codes.add("missing_system_message")
    if "user" not in roles:
        codes.add("missing_user_message")
    if "tools" in row and not _tools_ok(row["tools"]):
        codes.add("invalid_tools")
    if not row.keys() <= CHAT_ROW_KEYS:
        codes.add("unrecognized_example_key")
    return sorted(codes)


def _output_ok(output: Any) -> bool:
    return (
        isinstance(output, list)
        and len(output) == 1
        and isinstance(output[0], dict)
        and output[0].get("role") == "assistant"
    )


def preference_row_problems(row: Any) -> list[str]:
    if not isinstance(row, dict):
        return ["data_type"]
    prompt = row.get("input")
    if not isinstance(prompt, dict) or "preferred_output" not in row:
        return ["missing_preference_key"]
    if "non_preferred_output" not in row:
        return ["missing_preference_key"]
    messages = prompt.get("messages")
    if not messages or not isinstance(messages, list):
        return ["missing_messages_list"]
    codes: set[str] = set()
    preferred, rejected = row["preferred_output"], row["non_preferred_output"]
    if not (_output_ok(preferred) and _output_ok(rejected)):
        codes.add("invalid_preference_output")
    elif preferred == rejected:
        codes.add("identical_preference_outputs")
    outputs = (
        [*preferred, *rejected]
        if isinstance(preferred, list) and isinstance(rejected, list)
        else []
    )
    messages_problems([*messages, *outputs], codes)
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        codes.add("preference_input_ends_with_assistant")
    if "tools" in prompt and not _tools_ok(prompt["tools"]):
        codes.add("invalid_tools")
    return sorted(codes)


def prompt_completion_row_problems(row: Any) -> list[str]:
    if not isinstance(row, dict):
        return ["data_type"]
    if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
        return ["necessary_column"]
    return ["additional_column"] if len(row) > 2 else []
