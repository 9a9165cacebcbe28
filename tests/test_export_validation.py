"""Validation catches each rule it claims: the chat data-prep recipe, prepare_data, labels,
tokens, epochs and cost."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.checks import Tally, chat_row_problems, preference_row_problems
from exporter.legacy_checks import PromptCompletionStats, label_findings, prepare_data_findings
from exporter.tokens import (
    billed_tokens,
    default_epochs,
    encoding_for,
    model_info,
    point_tiktoken_at_bundled_files,
    token_counter,
)

USER = {"role": "user", "content": "hi"}
ANSWER = {"role": "assistant", "content": "hello"}
SYSTEM = {"role": "system", "content": "be nice"}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("row", "code"),
    [
        (["not", "a", "dict"], "data_type"),
        ({"prompt": "x"}, "missing_messages_list"),
        ({"messages": []}, "missing_messages_list"),
        ({"messages": [SYSTEM, {"content": "no role"}, ANSWER]}, "message_missing_key"),
        ({"messages": [SYSTEM, {"role": "user"}, ANSWER]}, "message_missing_key"),
        ({"messages": [SYSTEM, {**USER, "extra": 1}, ANSWER]}, "message_unrecognized_key"),
        ({"messages": [SYSTEM, {"role": "robot", "content": "x"}, ANSWER]}, "unrecognized_role"),
        ({"messages": [SYSTEM, {"role": "user", "content": ""}, ANSWER]}, "missing_content"),
        ({"messages": [SYSTEM, {"role": "user", "content": 42}, ANSWER]}, "missing_content"),
        ({"messages": [SYSTEM, USER]}, "example_missing_assistant_message"),
        ({"messages": [SYSTEM, USER, {**ANSWER, "weight": 2}]}, "invalid_weight"),
        ({"messages": [SYSTEM, {**USER, "weight": 1}, ANSWER]}, "invalid_weight"),
        (
            {"messages": [SYSTEM, USER, {"role": "assistant", "tool_calls": [{"id": "c"}]}]},
            "invalid_tool_call",
        ),
        (
            {
                "messages": [
                    SYSTEM,
                    USER,
                    {"role": "tool", "tool_call_id": "zz", "content": "r"},
                    ANSWER,
                ]
            },
            "unmatched_tool_result",
        ),
        ({"messages": [SYSTEM, USER, ANSWER], "tools": [{"name": "f"}]}, "invalid_tools"),
        ({"messages": [SYSTEM, USER, ANSWER], "model": "x"}, "unrecognized_example_key"),
        ({"messages": [USER, ANSWER]}, "missing_system_message"),
        ({"messages": [SYSTEM, ANSWER]}, "missing_user_message"),
        ({"messages": [SYSTEM, USER, ANSWER, USER]}, "last_message_not_assistant"),
    ],
)
def test_chat_checks(row: Any, code: str) -> None:
    assert code in chat_row_problems(row)


def test_a_good_chat_row_with_tools_has_no_problems() -> None:
    row = {
        "messages": [
            SYSTEM,
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            {**ANSWER, "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "parallel_tool_calls": True,
    }
    assert chat_row_problems(row) == []


@pytest.mark.parametrize(
    ("row", "code"),
    [
        ({"input": {"messages": [USER]}, "preferred_output": [ANSWER]}, "missing_preference_key"),
        (
            {
                "input": {"messages": [USER]},
                "preferred_output": [USER],
                "non_preferred_output": [ANSWER],
            },
            "invalid_preference_output",
        ),
        (
            {
                "input": {"messages": [USER]},
                "preferred_output": [ANSWER],
                "non_preferred_output": [ANSWER],
            },
            "identical_preference_outputs",
        ),
        (
            {
                "input": {"messages": [USER, ANSWER]},
                "preferred_output": [ANSWER],
                "non_preferred_output": [{"role": "assistant", "content": "meh"}],
            },
            "preference_input_ends_with_assistant",
        ),
    ],
)
def test_preference_checks(row: Any, code: str) -> None:
    assert code in preference_row_problems(row)


def _stats(rows: list[tuple[str, str]]) -> PromptCompletionStats:
    stats = PromptCompletionStats()
    half = PromptCompletionStats()
    for i, (prompt, completion) in enumerate(rows):
        (stats if i % 2 else half).add(f"ix-{i}", prompt, completion)
    half.merge(stats)  # merged in chunks, as the pool does
    return half


def _codes(rows: list[tuple[str, str]], duplicates: int = 0) -> dict[str, str]:
    tally = Tally(duplicates, [f"ix-{i}" for i in range(duplicates)])
    found, _ = prepare_data_findings(_stats(rows), tally, len({c for _, c in rows}))
    return {f.code: f.severity for f in found}


WORDS = ("yes", "soon", "today", "never", "maybe", "later", "now")
GOOD = [(f"question {i}\n\n###\n\n", f" {WORDS[i % 7]} {i}###") for i in range(150)]


def test_prepare_data_quiet_on_good_rows() -> None:
    found, summary = prepare_data_findings(_stats(GOOD), Tally(), 150)
    assert {f.code: f.severity for f in found} == {
        "num_examples": "info",
        "common_suffix": "info",
        "common_completion_suffix": "info",
    }
    assert summary["common_prompt_suffix"] == "\n\n###\n\n"
    assert summary["common_completion_suffix"] == "###"
    assert summary["task_type"] == "conditional generation"


def test_prepare_data_checks() -> None:
    assert _codes(GOOD[:20])["num_examples"] == "warning"
    assert _codes(GOOD, duplicates=3)["duplicated_rows"] == "warning"
    long = [*GOOD[:-1], ("x" * 9_000 + "\n\n###\n\n", " y" * 600 + "###")]
    assert _codes(long)["long_examples"] == "warning"
    assert _codes([(p.upper(), c) for p, c in GOOD])["lower_case_prompt"] == "warning"
    assert _codes([(p, c.upper()) for p, c in GOOD])["lower_case_completion"] == "warning"
    assert _codes([("same\n\n###\n\n", c) for _, c in GOOD])["common_suffix"] == "error"
    assert _codes([(f"q {i}", c) for i, (_, c) in enumerate(GOOD)])["common_suffix"] == "warning"
    prefixed = [("Answer this question please: " + p, c) for p, c in GOOD]
    assert _codes(prefixed)["common_prompt_prefix"] == "warning"
    assert _codes([(p, " Answer:" + c) for p, c in GOOD])["common_completion_prefix"] == "warning"
    assert _codes([(p, c[:-3]) for p, c in GOOD])["common_completion_suffix"] == "warning"
    assert _codes([(p, c.lstrip()) for p, c in GOOD])["completion_space_start"] == "warning"
    empty = [*GOOD[:-1], ("q\n\n###\n\n", "")]
    assert _codes(empty)["empty_completion"] == "error"
    labels = [(p, [" yes", " no"][i % 2]) for i, (p, _) in enumerate(GOOD)]
    codes = _codes(labels)
    assert codes["task_type"] == "info" and "common_completion_suffix" not in codes


def test_label_set() -> None:
    found, summary = label_findings({"yes": 3, "no": 2}, None, "yes")
    assert found == [] and summary == {
        "n_classes": 2,
        "positive_class": "yes",
        "labels": {"no": 2, "yes": 3},
    }
    codes = lambda *a: {f.code for f in label_findings(*a)[0]}  # noqa: E731
    assert codes({"yes": 3, "no": 2}, None, None) == {"positive_class_missing"}
    assert codes({"yes": 3, "no": 2}, None, "maybe") == {"positive_class_unknown"}
    assert codes({"yes": 3}, None, None) == {"too_few_classes"}
    assert codes({"a": 1, "b": 1}, ("a", "b", "c"), None) == {"labels_unseen"}
    assert codes({"a": 1, "b": 1, "c": 1}, None, "a") == {"positive_class_ignored"}


def test_models_encodings_limits_and_prices() -> None:
    assert encoding_for("gpt-4o-mini-2024-07-18") == "o200k_base"
    assert encoding_for("ft:gpt-4.1-2025-04-14:acme::x1") == "o200k_base"
    assert encoding_for("gpt-3.5-turbo-0125") == encoding_for("davinci-002") == "cl100k_base"
    mini = model_info("gpt-4o-mini-2024-07-18")
    assert (mini.example_limit, mini.training_price_per_1m, mini.legacy) == (65_536, 3.0, False)
    assert model_info("gpt-3.5-turbo-0613").example_limit == 4_096
    assert model_info("babbage-002").legacy
    unknown = model_info("my-model")
    assert (unknown.example_limit, unknown.training_price_per_1m) == (16_385, None)


def test_default_epochs_follow_the_recipe() -> None:
    assert default_epochs(5) == 20  # 100 // 5
    assert default_epochs(2) == 25  # capped
    assert default_epochs(34) == 3
    assert default_epochs(8_333) == 3
    assert default_epochs(10_000) == 2  # 25000 // 10000
    assert default_epochs(100_000) == 1
    assert billed_tokens([10, 20_000, 5], limit=16_385) == 16_400


def test_token_counts_are_exact_tiktoken_counts() -> None:
    point_tiktoken_at_bundled_files()
    counter = token_counter("cl100k_base")
    hello = len(counter.encoding.encode("Hello world"))
    assert counter.text("Hello world") == hello == 2
    total, answer = counter.chat(
        [
            {"role": "user", "content": "Hello world", "name": "bo"},
            {"role": "assistant", "content": "Hello world"},
        ]
    )
    name, user, assistant = (len(counter.encoding.encode(t)) for t in ("bo", "user", "assistant"))
    assert answer == hello
    assert total == 3 + (3 + user + hello + name + 1) + (3 + assistant + hello)
