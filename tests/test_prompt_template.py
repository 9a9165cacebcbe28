"""The frozen prompt template (tuneloop/prompt_template.py): shape, JSON, matching, stripping."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tuneloop.errors import BadRequest, TemplateMismatch
from tuneloop.prompt_template import (
    PromptTemplate,
    matches_messages,
    matches_prompt,
    mismatch_messages,
    parse_ref,
    strip_messages,
    strip_prompt,
)

SYSTEM = "You are Acme's support bot. Answer in two sentences. Never promise refunds. ¿Sí? 日本"
FEW_SHOT = (
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "Check Orders > Track."},
)
TEMPLATE = PromptTemplate(
    name="support-bot",
    version=1,
    system_prompt=SYSTEM,
    few_shot=FEW_SHOT,
    user_prefix="Customer says:\n",
    user_suffix="\nAnswer briefly.",
)


def request(question: str = "My parcel 🚚 is late") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        *[dict(t) for t in FEW_SHOT],
        {"role": "user", "content": f"Customer says:\n{question}\nAnswer briefly."},
    ]


def test_strip_keeps_only_what_varies() -> None:
    messages = request()
    before = copy.deepcopy(messages)
    assert strip_messages(TEMPLATE, messages) == [
        {"role": "user", "content": "My parcel 🚚 is late"}
    ]
    assert messages == before  # the input is never modified
    assert matches_messages(TEMPLATE, messages)


def test_replacement_system_prompt_takes_the_templates_place_and_role() -> None:
    messages = request()
    messages[0]["role"] = "developer"
    out = strip_messages(TEMPLATE, messages, system_prompt="Acme support.")
    assert out[0] == {"role": "developer", "content": "Acme support."}
    assert out[1:] == [{"role": "user", "content": "My parcel 🚚 is late"}]


def test_every_wrapped_user_turn_of_a_multi_turn_request_is_stripped() -> None:
    """Apps that wrap every turn: each user message holding the prefix and suffix loses them,
    not only the last (a model trained on the stripped newest turn would see the wrapped
    earlier ones otherwise)."""
    messages = request()
    messages[-1]["content"] = "Customer says:\nhi\nAnswer briefly."
    messages += [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Customer says:\nthe parcel\nAnswer briefly."},
        {"role": "assistant", "content": "It ships today."},
    ]
    out = strip_messages(TEMPLATE, messages)
    assert [m["content"] for m in out] == ["hi", "Hello!", "the parcel", "It ships today."]


def test_an_earlier_turn_sent_without_the_affixes_is_kept_as_sent() -> None:
    """Apps that wrap only the newest turn: earlier user turns without the prefix and suffix
    stay as they are; the last one must hold them."""
    messages = [*request()[:-1], {"role": "user", "content": "plain first question"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "Customer says:\nfollow-up\nAnswer briefly."}]
    out = strip_messages(TEMPLATE, messages)
    assert [m["content"] for m in out] == ["plain first question", "ok", "follow-up"]
    messages[-1]["content"] = "plain follow-up"
    error = mismatch_messages(TEMPLATE, messages)
    assert error is not None and error.part == "prefix"


def test_a_request_that_is_only_the_template_is_a_mismatch() -> None:
    """Nothing left once stripped: not an empty training example, nor an empty request to the
    fine-tuned model."""
    only = request("")
    error = mismatch_messages(TEMPLATE, only)
    assert error is not None and error.part == "empty"
    assert mismatch_messages(TEMPLATE, request(" \n")).part == "empty"  # type: ignore[union-attr]
    parts = request()
    parts[-1]["content"] = [{"type": "text", "text": "Customer says:\n\nAnswer briefly."}]
    assert mismatch_messages(TEMPLATE, parts).part == "empty"  # type: ignore[union-attr]
    no_affix = PromptTemplate(name="t", version=1, system_prompt=SYSTEM, few_shot=FEW_SHOT)
    assert mismatch_messages(no_affix, request()[:-1]).part == "empty"  # type: ignore[union-attr]
    legacy = PromptTemplate(name="qa", version=1, prompt_prefix="Article:\n",
                            prompt_suffix="\n###")
    with pytest.raises(TemplateMismatch) as info:
        strip_prompt(legacy, "Article:\n\n###")
    assert info.value.part == "empty"
    # an image is something: a turn of only an image after the prefix is not empty
    image = request()
    image[-1]["content"] = [{"type": "text", "text": "Customer says:\n"},
                            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    only_prefix = PromptTemplate(name="p", version=1, user_prefix="Customer says:\n")
    assert strip_messages(only_prefix, image)[-1]["content"] == [image[-1]["content"][1]]


def test_a_missing_few_shot_turn_is_a_mismatch() -> None:
    messages = request()
    del messages[2]  # the assistant's example answer
    error = mismatch_messages(TEMPLATE, messages)
    assert isinstance(error, TemplateMismatch) and error.part == "few_shot"
    assert "turn 2 of 2" in error.message
    with pytest.raises(TemplateMismatch):
        strip_messages(TEMPLATE, messages)
    assert mismatch_messages(TEMPLATE, request()[:2]) is not None  # the turns run out


def test_prefix_present_but_suffix_absent_is_a_mismatch() -> None:
    messages = request()
    messages[-1]["content"] = "Customer says:\nwhere is it?"
    error = mismatch_messages(TEMPLATE, messages)
    assert error is not None and error.part == "suffix"


def test_prefix_and_suffix_may_not_overlap() -> None:
    template = PromptTemplate(name="t", version=1, user_prefix="ab", user_suffix="ba")
    assert strip_messages(template, [{"role": "user", "content": "abXba"}])[0]["content"] == "X"
    error = mismatch_messages(template, [{"role": "user", "content": "aba"}])
    assert error is not None and error.part == "prefix_suffix_overlap"


def test_other_system_prompt_and_missing_system_prompt_are_mismatches() -> None:
    messages = request()
    messages[0]["content"] = SYSTEM + " "
    assert mismatch_messages(TEMPLATE, messages).part == "system_prompt"  # type: ignore[union-attr]
    assert mismatch_messages(TEMPLATE, request()[1:]).part == "system_prompt"  # type: ignore[union-attr]


def test_unicode_is_compared_by_characters_not_normalized() -> None:
    # "é" composed vs decomposed: different strings, so no match (nothing is guessed)
    template = PromptTemplate(name="t", version=1, system_prompt="caf\u00e9")
    user = {"role": "user", "content": "q"}
    assert matches_messages(template, [{"role": "system", "content": "caf\u00e9"}, user])
    assert not matches_messages(template, [{"role": "system", "content": "cafe\u0301"}, user])


def test_multimodal_content_lists() -> None:
    messages = request()
    messages[0]["content"] = [
        {"type": "text", "text": SYSTEM[:10]},
        {"type": "text", "text": SYSTEM[10:]},
    ]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    messages[-1]["content"] = [
        {"type": "text", "text": "Customer says:\nsee photo"},
        image,
        {"type": "text", "text": "\nAnswer briefly."},
    ]
    out = strip_messages(TEMPLATE, messages)
    # an all-text system content matches the string; the emptied suffix part is dropped
    assert out == [{"role": "user", "content": [{"type": "text", "text": "see photo"}, image]}]
    assert messages[-1]["content"][0]["text"] == "Customer says:\nsee photo"


def test_multimodal_user_message_ending_with_an_image_does_not_match_a_suffix() -> None:
    messages = request()
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    messages[-1]["content"] = [{"type": "text", "text": "Customer says:\nsee photo"}, image]
    error = mismatch_messages(TEMPLATE, messages)
    assert error is not None and error.part == "user_content"


def test_a_single_text_part_is_stripped_on_both_ends() -> None:
    messages = request()
    messages[-1]["content"] = [{"type": "text", "text": "Customer says:\nq\nAnswer briefly."}]
    assert strip_messages(TEMPLATE, messages)[-1]["content"] == [{"type": "text", "text": "q"}]


def test_few_shot_turn_with_a_tool_call_or_other_name_does_not_match() -> None:
    messages = request()
    messages[2] = {**messages[2], "tool_calls": [{"id": "x", "type": "function"}]}
    assert not matches_messages(TEMPLATE, messages)
    messages = request()
    messages[1] = {**messages[1], "name": "alice"}
    assert not matches_messages(TEMPLATE, messages)


def test_template_without_system_prompt_keeps_the_apps_system_message() -> None:
    template = PromptTemplate(name="t", version=1, few_shot=FEW_SHOT)
    messages = [
        {"role": "system", "content": "varies 42"},
        *FEW_SHOT,
        {"role": "user", "content": "q"},
    ]
    assert strip_messages(template, messages) == [messages[0], messages[-1]]
    # a replacement system prompt would delete the app's own (per-request text): a mismatch
    for role in ("system", "developer"):
        messages[0]["role"] = role
        with pytest.raises(TemplateMismatch) as caught:
            strip_messages(template, messages, system_prompt="short")
        assert caught.value.part == "own_system_prompt"
    # and inserted when the app sent none
    assert strip_messages(template, messages[1:], system_prompt="short") == [
        {"role": "system", "content": "short"}, messages[-1]]


def test_bad_request_shapes_are_mismatches_not_crashes() -> None:
    assert not matches_messages(TEMPLATE, "hello")  # type: ignore[arg-type]
    assert not matches_messages(TEMPLATE, [])
    assert not matches_messages(TEMPLATE, [None, 3])  # type: ignore[list-item]
    no_user: list[dict[str, Any]] = [*request()[:-1], {"role": "assistant", "content": "x"}]
    assert mismatch_messages(TEMPLATE, no_user).part == "user_message"  # type: ignore[union-attr]


def test_legacy_prompt_prefix_and_suffix() -> None:
    template = PromptTemplate(
        name="qa", version=3, prompt_prefix="Article:\n", prompt_suffix="\n\n###\nQuestions:"
    )
    prompt = "Article:\nDuckDB is fast.\n\n###\nQuestions:"
    assert strip_prompt(template, prompt) == "DuckDB is fast."
    assert strip_prompt(template, prompt, replacement="Q: ") == "Q: DuckDB is fast."
    assert not matches_prompt(template, "Article:\nno suffix")
    assert not matches_prompt(template, ["Article:\nx"])
    with pytest.raises(TemplateMismatch) as info:
        strip_prompt(template, "DuckDB\n\n###\nQuestions:")
    assert info.value.part == "prefix" and info.value.status_code == 400
    with pytest.raises(TemplateMismatch, match="legacy"):
        strip_messages(template, request())
    with pytest.raises(TemplateMismatch, match="chat"):
        strip_prompt(TEMPLATE, prompt)


def test_json_round_trip_and_ref() -> None:
    again = PromptTemplate.from_json(TEMPLATE.to_json())
    assert again == TEMPLATE and again.ref == "support-bot-v1"
    assert {again: 1}[TEMPLATE] == 1  # usable as a cache key
    assert parse_ref("support-bot-v12") == ("support-bot", 12)
    assert parse_ref("support-bot") == ("support-bot", None)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"name": "x", "version": 1}, "at least one part"),
        ({"name": "x-v2", "version": 1, "user_prefix": "a"}, "-v<number>"),
        ({"name": "", "version": 1, "user_prefix": "a"}, "bad template name"),
        ({"name": "x", "version": 0, "user_prefix": "a"}, "starts at 1"),
        ({"name": "x", "version": "1", "user_prefix": "a"}, "whole number"),
        ({"name": "x", "version": 1, "system_prompt": ""}, "must not be empty"),
        ({"name": "x", "version": 1, "user_prefix": 3}, "user_prefix must be a string"),
        ({"name": "x", "version": 1, "few_shot": "hi"}, "list of messages"),
        ({"name": "x", "version": 1, "few_shot": [{"role": "tool", "content": "a"}]}, "role"),
        (
            {"name": "x", "version": 1, "few_shot": [{"role": "user", "content": "a", "x": 1}]},
            "can't hold",
        ),
        ({"name": "x", "version": 1, "user_prefix": "a", "extra": 1}, "unknown template fields"),
    ],
)
def test_bad_templates_are_refused_clearly(data: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        PromptTemplate.from_dict(data)


def test_from_json_refuses_bad_json() -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        PromptTemplate.from_json("{")
    with pytest.raises(BadRequest, match="JSON object"):
        PromptTemplate.from_json("[]")
