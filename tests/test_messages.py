"""The message list of each endpoint (`storage.messages.messages_of`), a pure function the
review API and the exporter share; and validation of edited lists."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from storage.messages import NotReviewable, messages_of, validate_messages
from tuneloop.errors import BadRequest

CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}


def test_chat_keeps_the_conversation_and_choice_0_with_tool_calls() -> None:
    request = {"messages": [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "weather?"}]}
    response = {"choices": [
        {"index": 1, "message": {"role": "assistant", "content": "other"}},
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [CALL],
                                 "refusal": None, "annotations": []}},
    ]}
    messages, alternatives = messages_of("chat.completions", request, response)
    assert messages == [*request["messages"],
                        {"role": "assistant", "content": None, "tool_calls": [CALL]}]
    assert alternatives == [{"role": "assistant", "content": "other"}]


def test_chat_with_no_answer_logged_is_the_request_alone() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    error = {"error": {"message": "boom"}}
    assert messages_of("chat.completions", request, error) == (request["messages"], [])
    assert messages_of("chat.completions", None, None) == ([], [])


def test_legacy_completion_becomes_user_then_assistant() -> None:
    response = {"choices": [{"index": 0, "text": " there"}, {"index": 1, "text": " you"}]}
    assert messages_of("completions", {"prompt": ["Hello"]}, response) == (
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": " there"}],
        [{"role": "assistant", "content": " you"}])
    assert messages_of("completions", {"prompt": [1, 2]}, {})[0] == [
        {"role": "user", "content": "[1,2]"}]


def test_responses_become_input_and_output_messages() -> None:
    request = {"instructions": "be kind", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "weather in "},
                                     {"type": "input_text", "text": "Paris?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]}
    response = {"output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}]},
    ]}
    messages, alternatives = messages_of("responses", request, response)
    assert messages == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    assert alternatives == []


def test_embeddings_are_not_reviewable() -> None:
    with pytest.raises(NotReviewable):
        messages_of("embeddings", {"input": "x"}, {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "choices", "message", "role", "content", "prompt", "text",
                         "input", "output", "type", "index", "tool_calls", "instructions"]),
        inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(endpoint=st.sampled_from(["chat.completions", "completions", "responses"]),
       request=json_values, response=json_values)
@example(endpoint="completions", request={"prompt": -9223372036854775809}, response=None)
@example(endpoint="responses", request={"input": [{"role": "user", "content": {"n": 2**70}}]},
         response=None)  # integers beyond 64 bits: valid JSON that orjson won't write
def test_any_logged_shape_gives_a_message_list(endpoint: str, request: Any,
                                               response: Any) -> None:
    messages, alternatives = messages_of(endpoint, request, response)
    assert isinstance(messages, list) and isinstance(alternatives, list)
    assert all(isinstance(m, dict) for m in messages)  # request messages are kept as sent
    assert all(m["role"] == "assistant" for m in alternatives)


def test_validate_messages() -> None:
    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert validate_messages(good) == good
    assert validate_messages([{"role": "assistant", "content": None, "tool_calls": [CALL]}])
    for bad in ([], "x", [1], [{"role": "user", "content": "q"}],
                [{"role": "assistant"}], [{"role": "assistant", "content": 3}],
                [{"role": "user", "content": "q", "tool_calls": [CALL]},
                 {"role": "assistant", "content": "a"}]):
        with pytest.raises(BadRequest):
            validate_messages(bad)
