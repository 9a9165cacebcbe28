"""Training-example formats: pure functions from an :class:`Example` to one JSONL row.

- `chat`: OpenAI's supervised chat format, `{"messages": [...], "tools"?: [...]}`, with
  system, tool calls and tool results kept.
- `legacy`: the prompt/completion format of the article: every prompt ends with the
  separator, which occurs nowhere else in it; every completion starts with one space and ends
  with the stop sequence, which occurs nowhere else in it.
- `preference`: OpenAI's DPO format; the reviewer's answer is preferred, the logged answer is
  not. Examples whose answer was not edited are skipped (there is no preference to learn).
- `classification`: prompt/completion where the completion is the label.

A rule an example breaks raises :class:`ExampleError` naming it; :func:`format_examples`
collects every offender and raises one :class:`DatasetError` naming them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from exporter.examples import (
    Example,
    Message,
    clean_message,
    content_text,
    has_tool_use,
    same_answer,
)
from tuneloop.errors import DatasetError

FormatName = Literal["chat", "legacy", "preference", "classification"]
FORMATS: tuple[str, ...] = get_args(FormatName)
DEFAULT_SEPARATOR = "\n\n###\n\n"
DEFAULT_STOP = "###"
MAX_NAMED = 20  # offending example ids named in one error message


class ExampleError(DatasetError):
    """One example breaks a format rule. `reason` is a stable code for reports."""

    def __init__(self, reason: str, example_id: str, message: str):
        super().__init__(f"example {example_id}: {message}")
        self.reason = reason
        self.example_id = example_id


class RuleViolations(DatasetError):
    """Examples break rules: `problems` maps each rule to the offending example ids (all of
    them, or the first ones when `counts` says there were more); the message names the first
    few of each rule."""

    def __init__(
        self,
        problems: Mapping[str, Sequence[str]],
        counts: Mapping[str, int] | None = None,
        *,
        what: str = "examples break the format rules",
    ):
        self.problems = {reason: list(ids) for reason, ids in problems.items()}
        self.counts = {r: (counts or {}).get(r, len(ids)) for r, ids in self.problems.items()}
        parts = []
        for reason, ids in sorted(self.problems.items()):
            more = self.counts[reason] - len(ids[:MAX_NAMED])
            named = ", ".join(ids[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{reason} ({self.counts[reason]}): {named}")
        super().__init__(f"{what}: " + "; ".join(parts))


@dataclass(frozen=True, slots=True)
class Skipped:
    """An example the format leaves out on purpose (not an error): counted in the manifest."""

    reason: str


@dataclass(frozen=True, slots=True)
class FormatOptions:
    format: FormatName = "chat"
    separator: str = DEFAULT_SEPARATOR
    stop: str | None = None  # None: `###` for legacy, nothing after a classification label
    labels: tuple[str, ...] | None = None
    positive_class: str | None = None

    @property
    def effective_stop(self) -> str | None:
        if self.stop is None and self.format == "legacy":
            return DEFAULT_STOP
        return self.stop

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DatasetError(
                f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}",
                param="format",
            )
        if self.format in ("legacy", "classification") and not self.separator:
            raise DatasetError("the prompt separator must not be empty", param="separator")
        if self.stop == "":
            raise DatasetError("the stop sequence must not be empty", param="stop")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise DatasetError("the label set has duplicates", param="labels")


def _tools(example: Example) -> list[dict[str, Any]] | None:
    return [dict(tool) for tool in example.tools] if example.tools else None


def to_chat(example: Example) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": [clean_message(m) for m in example.messages]}
    tools = _tools(example)
    if tools:
        row["tools"] = tools
        if example.parallel_tool_calls is not None:
            row["parallel_tool_calls"] = example.parallel_tool_calls
    return row


def _answer(example: Example) -> tuple[Sequence[Message], Message]:
    """The prompt messages and the final assistant message (the answer to learn)."""
    if not example.messages or example.messages[-1].get("role") != "assistant":
        raise ExampleError(
            "missing_answer", example.interaction_id, "the last message is not an assistant answer"
        )
    return example.messages[:-1], example.messages[-1]


def render_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """A single user message is the prompt as it is (a logged legacy completion round-trips);
    anything longer becomes a transcript, one `Role: text` paragraph per message."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return content_text(messages[0].get("content"))
    return "\n".join(
        f"{str(m.get('role', '')).capitalize()}: {content_text(m.get('content'))}" for m in messages
    )


def _text_pair(example: Example) -> tuple[str, str]:
    prompt_messages, answer = _answer(example)
    if any(has_tool_use(m) or m.get("role") == "tool" for m in example.messages):
        raise ExampleError(
            "not_representable",
            example.interaction_id,
            "tool calls can't be written as prompt/completion; use the chat format",
        )
    return render_prompt(prompt_messages), content_text(answer.get("content"))


def with_separator(example_id: str, prompt: str, separator: str) -> str:
    if not prompt.endswith(separator):
        prompt += separator
    if prompt.find(separator) != len(prompt) - len(separator):
        raise ExampleError(
            "separator_in_prompt",
            example_id,
            f"the separator {separator!r} occurs inside the prompt, not only at its end",
        )
    return prompt


def with_stop(example_id: str, completion: str, stop: str | None) -> str:
    """One leading space, then the text, then the stop sequence (if any) exactly once."""
    if not completion.startswith(" ") or completion.startswith("  "):
        completion = " " + completion.lstrip()
    if stop is None:
        return completion
    if not completion.endswith(stop):
        completion += stop
    if completion.find(stop) != len(completion) - len(stop):
        raise ExampleError(
            "stop_in_completion",
            example_id,
            f"the stop sequence {stop!r} occurs inside the completion, not only at its end",
        )
    return completion


def to_legacy(
    example: Example, separator: str = DEFAULT_SEPARATOR, stop: str = DEFAULT_STOP
) -> dict[str, str]:
    prompt, completion = _text_pair(example)
    if not completion.strip():
        raise ExampleError("empty_completion", example.interaction_id, "the answer is empty")
    return {
        "prompt": with_separator(example.interaction_id, prompt, separator),
        "completion": with_stop(example.interaction_id, completion, stop),
    }


def to_classification(
    example: Example,
    separator: str = DEFAULT_SEPARATOR,
    labels: Sequence[str] | None = None,
    stop: str | None = None,
) -> dict[str, str]:
    prompt, answer = _text_pair(example)
    label = (example.label if example.label is not None else answer).strip()
    if not label:
        raise ExampleError("missing_label", example.interaction_id, "the example has no label")
    if labels is not None and label not in labels:
        raise ExampleError(
            "unknown_label",
            example.interaction_id,
            f"label {label!r} is not in the label set {list(labels)}",
        )
    return {
        "prompt": with_separator(example.interaction_id, prompt, separator),
        "completion": with_stop(example.interaction_id, label, stop),
    }


def to_preference(example: Example) -> dict[str, Any] | Skipped:
    prompt_messages, answer = _answer(example)
    if example.original is None:
        return Skipped("not_edited")
    preferred = {k: v for k, v in clean_message(answer).items() if k != "weight"}
    rejected = {k: v for k, v in clean_message(example.original).items() if k != "weight"}
    rejected["role"] = "assistant"
    if same_answer(preferred, rejected):
        return Skipped("not_edited")
    prompt: dict[str, Any] = {"messages": [clean_message(m) for m in prompt_messages]}
    tools = _tools(example)
    if tools:
        prompt["tools"] = tools
        if example.parallel_tool_calls is not None:
            prompt["parallel_tool_calls"] = example.parallel_tool_calls
    return {"input": prompt, "preferred_output": [preferred], "non_preferred_output": [rejected]}


def format_example(example: Example, options: FormatOptions) -> dict[str, Any] | Skipped:
    """One row in the chosen format, or `Skipped`; raises :class:`ExampleError`."""
    if options.format == "chat":
        return to_chat(example)
    if options.format == "legacy":
        return to_legacy(example, options.separator, options.effective_stop or DEFAULT_STOP)
    if options.format == "preference":
        return to_preference(example)
    return to_classification(example, options.separator, options.labels, options.effective_stop)


def format_examples(
    examples: Iterable[Example], options: FormatOptions
) -> list[dict[str, Any] | Skipped]:
    """Format every example; if any breaks a rule, raise one error naming all of them."""
    rows: list[dict[str, Any] | Skipped] = []
    problems: dict[str, list[str]] = {}
    for example in examples:
        try:
            rows.append(format_example(example, options))
        except ExampleError as exc:
            problems.setdefault(exc.reason, []).append(exc.example_id)
    if problems:
        raise RuleViolations(problems)
    return rows
