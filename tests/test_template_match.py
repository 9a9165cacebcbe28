"""Matching and stripping are total over JSON (tuneloop/template_match.py, r13 #1): whatever a
client puts anywhere in a request, they return or raise TemplateMismatch, never anything else,
and never modify the request."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tuneloop.errors import TemplateMismatch
from tuneloop.prompt_template import PromptTemplate, strip_messages, strip_prompts
from tuneloop.responses_strip import strip_responses

SYSTEM = "You are Acme's support bot."
CHAT = PromptTemplate(name="t", version=1, system_prompt=SYSTEM,
                      few_shot=({"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello!"}),
                      user_prefix="Q: ", user_suffix="\nA:")
BARE = PromptTemplate(name="b", version=1, user_prefix="Q: ")
LEGACY = PromptTemplate(name="l", version=1, prompt_prefix="Answer.\n", prompt_suffix="\nA:")
HOSTILE: list[Any] = [None, 5, 1.5, True, "x", "", [], {}, [None], ["x"], {"type": "text"},
                      {"type": "text", "text": None}, [{"type": "text"}], {"role": 5}]


def chat_request() -> list[Any]:
    return [{"role": "system", "content": [{"type": "text", "text": "You are "},
                                           {"type": "text", "text": "Acme's support bot."}]},
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Q: earlier\nA:"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
            {"role": "user", "content": [{"type": "text", "text": "Q: where "},
                                         {"type": "image_url", "image_url": {"url": "u"}},
                                         {"type": "text", "text": "is it?\nA:"}]}]


def mutations(value: Any) -> Iterator[Any]:
    """`value` with each of its sub-values (at any depth) replaced by each hostile value."""
    yield from HOSTILE
    if isinstance(value, list):
        for index, item in enumerate(value):
            for changed in mutations(item):
                yield [*value[:index], changed, *value[index + 1:]]
            yield value[:index] + value[index + 1:]  # the item left out
    elif isinstance(value, dict):
        for key, item in value.items():
            for changed in mutations(item):
                yield {**value, key: changed}
            yield {k: v for k, v in value.items() if k != key}


def test_the_request_matches_before_it_is_mutated() -> None:
    assert strip_messages(CHAT, chat_request(), system_prompt="S")[0] == {
        "role": "system", "content": "S"}


@pytest.mark.parametrize("template", [CHAT, BARE], ids=["chat", "bare"])
def test_any_mutation_of_a_chat_request_strips_or_is_a_mismatch(template: PromptTemplate) -> None:
    count = 0
    for messages in mutations(chat_request()):
        before = copy.deepcopy(messages)
        for replacement in (None, "S"):
            try:
                result = strip_messages(template, messages, system_prompt=replacement)
            except TemplateMismatch:
                pass
            else:
                assert isinstance(result, list)
                assert all(isinstance(m, dict) and isinstance(m["role"], str) for m in result)
        assert messages == before
        count += 1
    assert count > 500


def test_any_mutation_of_a_legacy_prompt_strips_or_is_a_mismatch() -> None:
    for prompt in mutations(["Answer.\nWhat is it?\nA:", "Answer.\nAnd this?\nA:"]):
        try:
            result = strip_prompts(LEGACY, prompt)
        except TemplateMismatch:
            continue
        assert isinstance(result, list) and all(isinstance(p, str) for p in result)


# -- the Responses API shape (tuneloop/responses_strip.py) -----------------------------------
def responses_request() -> dict[str, Any]:
    return {"model": "m", "instructions": SYSTEM, "store": False, "input": [
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello!"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
        {"role": "user", "content": [{"type": "input_text", "text": "Q: where?\nA:"}]}]}


def test_a_responses_request_is_stripped_in_its_own_shape() -> None:
    body = responses_request()
    before = copy.deepcopy(body)
    stripped = strip_responses(CHAT, body, "Acme.")
    assert stripped["instructions"] == "Acme." and stripped["store"] is False
    assert stripped["input"] == [*body["input"][2:4], {"role": "user", "content": [
        {"type": "input_text", "text": "where?"}]}]
    assert "instructions" not in strip_responses(CHAT, body, None)
    assert body == before
    kept = strip_responses(BARE, {"input": "Q: hi", "instructions": "Own."}, None)
    assert kept == {"input": "hi", "instructions": "Own."}
    assert strip_responses(None, {"input": "hi"}, "S") == {"input": "hi", "instructions": "S"}
    own = [{"role": "developer", "content": "Own."}, {"role": "user", "content": "hi"}]
    assert strip_responses(None, {"input": own}, "S") == {
        "input": [{"role": "developer", "content": "S"}, own[1]]}
    assert strip_responses(None, {"input": "hi", "instructions": "Own."}, "S") == {
        "input": "hi", "instructions": "S"}


def test_any_mutation_of_a_responses_request_strips_or_is_a_mismatch() -> None:
    count = 0
    for body in mutations(responses_request()):
        if not isinstance(body, dict):
            continue
        before = copy.deepcopy(body)
        for template in (CHAT, BARE, None):
            with contextlib.suppress(TemplateMismatch):
                strip_responses(template, body, "S")
        assert body == before
        count += 1
    assert count > 300
