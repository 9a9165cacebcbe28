"""Formats: each a pure function from an Example to one JSONL row; rule breakers are named."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.examples import Example, clean_message, fingerprint
from exporter.formats import (
    DEFAULT_SEPARATOR,
    ExampleError,
    FormatOptions,
    RuleViolations,
    Skipped,
    format_examples,
    to_chat,
    to_classification,
    to_legacy,
    to_preference,
)
from tuneloop.errors import DatasetError

TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]


def qa(
    i: int, question: str = "Where is my order?", answer: str = "It ships today.", **kw: Any
) -> Example:
    return Example(
        f"ix-{i}",
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        **kw,
    )


def test_chat_keeps_system_tools_tool_calls_and_results() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": {"order": "42"}},  # logged as an object
    }
    example = Example(
        "ix-1",
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Order 42?", "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": "Shipped.", "annotations": [], "weight": 1},
        ],
        tools=TOOLS,
        parallel_tool_calls=False,
    )
    row = to_chat(example)
    assert row == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Order 42?", "name": "ann"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"order":"42"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": "Shipped.", "weight": 1},
        ],
        "tools": TOOLS,
        "parallel_tool_calls": False,
    }
    assert example.messages[0]["role"] == "developer"  # the input is not modified


def test_clean_message_keeps_unknown_content_for_validation_to_name() -> None:
    message = {"role": "assistant", "content": "no", "refusal": "I can't", "audio": None}
    assert clean_message(message) == {"role": "assistant", "content": "no", "refusal": "I can't"}


def test_legacy_follows_the_article() -> None:
    row = to_legacy(qa(1))
    assert row == {"prompt": "Where is my order?\n\n###\n\n", "completion": " It ships today.###"}
    # already formatted text is not formatted twice
    again = to_legacy(qa(2, "Where is my order?\n\n###\n\n", " It ships today.###"))
    assert again == row
    custom = to_legacy(qa(3, answer="  Soon."), separator=" ->", stop="\n")
    assert custom == {"prompt": "Where is my order? ->", "completion": " Soon.\n"}


def test_legacy_transcript_for_longer_conversations() -> None:
    example = Example(
        "ix-1",
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Order?"},
            {"role": "assistant", "content": "Shipped."},
        ],
    )
    assert to_legacy(example)["prompt"] == (
        "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: Order?" + DEFAULT_SEPARATOR
    )


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        (qa(1, "What does ### mean?\n\n###\n\nreally"), "separator_in_prompt"),
        (qa(1, "Ends with half a separator\n\n###"), "separator_in_prompt"),
        (qa(1, answer="Use ### as a heading"), "stop_in_completion"),
        (qa(1, answer="Almost a stop#"), "stop_in_completion"),  # "#" + "###" stops early
        (qa(1, answer="   "), "empty_completion"),
        (Example("ix-1", [{"role": "user", "content": "hi"}]), "missing_answer"),
    ],
)
def test_legacy_rule_breakers_are_named(example: Example, reason: str) -> None:
    with pytest.raises(ExampleError) as caught:
        to_legacy(example)
    assert caught.value.reason == reason and caught.value.example_id == "ix-1"
    assert isinstance(caught.value, DatasetError)


def test_legacy_refuses_tool_calls() -> None:
    example = Example(
        "ix-9",
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
            {"role": "tool", "tool_call_id": "c", "content": "y"},
            {"role": "assistant", "content": "z"},
        ],
    )
    with pytest.raises(ExampleError, match="chat format"):
        to_legacy(example)


def test_format_examples_names_every_offender_at_once() -> None:
    examples = [
        qa(0),
        qa(1, answer="a ### b"),
        qa(2),
        qa(3, "x\n\n###\n\ny"),
        qa(4, answer="c###d"),
    ]
    with pytest.raises(RuleViolations) as caught:
        format_examples(examples, FormatOptions("legacy"))
    error = caught.value
    assert error.problems == {
        "stop_in_completion": ["ix-1", "ix-4"],
        "separator_in_prompt": ["ix-3"],
    }
    assert "ix-1" in error.message and "ix-3" in error.message and "ix-4" in error.message
    assert error.status_code == 400 and error.code == "invalid_dataset"


def test_preference_prefers_the_reviewers_edit() -> None:
    edited = qa(
        1,
        answer="It ships today, tracking #123.",
        tools=TOOLS,
        original={"role": "assistant", "content": "Soon.", "refusal": None},
    )
    row = to_preference(edited)
    assert row == {
        "input": {"messages": [{"role": "user", "content": "Where is my order?"}], "tools": TOOLS},
        "preferred_output": [{"role": "assistant", "content": "It ships today, tracking #123."}],
        "non_preferred_output": [{"role": "assistant", "content": "Soon."}],
    }
    unedited = qa(2, original={"role": "assistant", "content": "It ships today."})
    assert to_preference(unedited) == Skipped("not_edited")
    assert to_preference(qa(3)) == Skipped("not_edited")


def test_classification_checks_the_label_set() -> None:
    assert to_classification(qa(1, label="positive")) == {
        "prompt": "Where is my order?\n\n###\n\n",
        "completion": " positive",
    }
    assert to_classification(qa(2, answer=" refund "))["completion"] == " refund"
    with pytest.raises(ExampleError) as caught:
        to_classification(qa(3, label="maybe"), labels=("yes", "no"))
    assert caught.value.reason == "unknown_label"


def test_options_are_checked() -> None:
    with pytest.raises(DatasetError, match="unknown format"):
        FormatOptions("csv")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="separator"):
        FormatOptions("legacy", separator="")
    with pytest.raises(DatasetError, match="duplicates"):
        FormatOptions("classification", labels=("a", "a"))


def test_fingerprint_ignores_whitespace_and_case_only() -> None:
    a = qa(1, "Where is  my ORDER?\n", "It ships today.")
    b = qa(2, "where is my order?", "It  ships today.")
    c = qa(3, "Where is my order?", "It ships tomorrow.")
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert fingerprint(qa(4, "ÉTÉ", "ok")) == fingerprint(qa(5, "été", "ok"))
