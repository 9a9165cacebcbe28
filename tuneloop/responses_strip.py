"""A frozen template stripped from a `/v1/responses` request, as OpenAI's Responses API
defines it: `instructions` is the system (developer) message put first in the model's
context; `input` is a string (one user message) or a list of items, a message item being
`{role, content}` (content a string or `input_text` / `output_text` parts) and other items
(`function_call`, `function_call_output`, `reasoning`...) typed, without a role.

The request is read as the chat message list it stands for (`instructions` first, then the
input's messages; other items kept in place and never matched), stripped by the same kernel
(tuneloop/template_match.py), and written back in its own shape: the template's system prompt
taken out of `instructions` (a replacement system prompt put there instead, or put there when
the request has none; an input that starts with a system message has it replaced there), the
few-shot items
and the user prefix/suffix out of `input` (a string input stays a string).

A request whose context is not all in the body can't be shown to hold the template: one with
`previous_response_id`, `conversation` or a stored `prompt` is a mismatch (`responses_api`),
sent as the app sent it. The API has no `stop`; a target's stop is not added.
"""

from __future__ import annotations

from typing import Any

from tuneloop.errors import TemplateMismatch
from tuneloop.prompt_template import PromptTemplate, strip_messages
from tuneloop.template_match import RESPONSES_SYSTEM_KEYS, check_system_message

_SERVER_CONTEXT = ("previous_response_id", "conversation", "prompt")
_ITEM = "(item)"  # the role a non-message item is read with: never a template's


def strip_responses(template: PromptTemplate | None, payload: dict[str, Any],
                    system_prompt: str | None) -> dict[str, Any]:
    """The request without the template (and with `system_prompt` as its `instructions` when
    given); raises :class:`TemplateMismatch`. `payload` is never modified."""
    held = [key for key in _SERVER_CONTEXT if payload.get(key) is not None]
    if held:
        raise TemplateMismatch(
            f"a /v1/responses request with {', '.join(held)} holds context the proxy can't "
            "see: sent as the app sent it", "responses_api")
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise TemplateMismatch("instructions is not a string, which the OpenAI API refuses",
                               "malformed")
    source = payload.get("input")
    wrapped: dict[int, Any] = {}  # a non-message item is read as a message of its own role
    if isinstance(source, str):
        items: list[Any] = [{"role": "user", "content": source}]
    elif isinstance(source, list):
        items = []
        for item in source:
            if isinstance(item, dict) and "role" not in item and isinstance(item.get("type"), str):
                wrapper = {"role": _ITEM}
                wrapped[id(wrapper)] = item
                item = wrapper
            if not isinstance(item, dict) or not isinstance(item.get("role"), str):
                raise TemplateMismatch("an input item is neither a message nor a typed item, "
                                       "which the OpenAI API refuses", "malformed")
            items.append(item)
    elif source is None:
        raise TemplateMismatch("the request has no input", "input")
    else:
        raise TemplateMismatch("input is neither a string nor a list, which the OpenAI API "
                               "refuses", "malformed")
    head = {"role": "system", "content": instructions} if instructions is not None else None
    messages = [head, *items] if head is not None else items
    if template is not None:
        stripped = strip_messages(template, messages, system_prompt=system_prompt,
                                  system_keys=RESPONSES_SYSTEM_KEYS)
    elif head is None and items and isinstance(items[0], dict) and items[0].get("role") in (
            "system", "developer"):  # replace_system_prompt alone
        if not isinstance(items[0].get("content"), str | list):
            raise TemplateMismatch("the system message's content is neither a string nor a "
                                   "list, which the OpenAI API refuses", "malformed")
        check_system_message(items[0], RESPONSES_SYSTEM_KEYS)
        stripped = [{**items[0], "content": system_prompt}, *items[1:]]
    else:
        stripped = [{"role": "system", "content": system_prompt}, *items]
    changed = dict(payload)
    if (head is None and system_prompt is not None and stripped
            and stripped[0].get("content") == system_prompt
            and not (items and items[0].get("role") in ("system", "developer"))):
        # inserted, as there was no system prompt: the Responses API's place for it
        changed["instructions"] = system_prompt
        stripped = stripped[1:]
    elif head is not None:  # the system message stands for `instructions`: it goes back there
        if system_prompt is not None:
            changed["instructions"] = system_prompt
            stripped = stripped[1:]
        elif stripped and stripped[0] is head:
            stripped = stripped[1:]
        else:
            del changed["instructions"]  # the template's system prompt, taken out
    unwrapped = [wrapped.get(id(m), m) for m in stripped]
    if (isinstance(source, str) and len(unwrapped) == 1
            and isinstance(unwrapped[0].get("content"), str)):
        changed["input"] = unwrapped[0]["content"]
    else:
        changed["input"] = unwrapped
    return changed
