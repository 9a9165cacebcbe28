"""Readable, safe rendering of a message list.

Model output (and anything a client sent) is untrusted: it is only ever shown through
elements that display text as text (`st.text`, `st.code`, `st.json`, dataframes), never
through Markdown or HTML, so HTML, scripts or Markdown images in a completion can't run or
load anything in the reviewer's browser. Labels and captions carry our own words only.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import streamlit as st

FOLD_CHARS = 1200
KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
AVATARS = {"system": ":material/settings:", "developer": ":material/settings:",
           "tool": ":material/build:", "function": ":material/build:"}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def escape_markdown(text: str) -> str:
    """Text for a Markdown element (alerts, labels) that shows as the same text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def show_text(text: str) -> None:
    """Plain text, long text folded behind an expander."""
    if len(text) <= FOLD_CHARS:
        st.text(text)
        return
    st.text(text[:FOLD_CHARS] + " …")
    with st.expander(f"Show all {len(text):,} characters"):
        st.text(text)


def _show_content(content: Any) -> None:
    if content is None:
        return
    if isinstance(content, str):
        show_text(content)
        return
    if not isinstance(content, list):
        st.code(json.dumps(content, indent=2, ensure_ascii=False), language="json")
        return
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            show_text(str(part.get("text") or ""))
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            st.caption("image (not loaded)")
            st.text(url[:200] + (" …" if len(url) > 200 else ""))
        else:
            st.code(json.dumps(part, indent=2, ensure_ascii=False), language="json")


def _show_tool_call(call: Any) -> None:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        st.code(json.dumps(call, indent=2, ensure_ascii=False), language="json")
        return
    st.caption("tool call")
    st.text(f"{function.get('name')}  (id {call.get('id')})")
    arguments = str(function.get("arguments") or "")
    try:
        pretty = json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
        st.code(pretty, language="json")
    except ValueError:
        st.code(arguments, language=None)


def show_message(message: dict[str, Any]) -> None:
    raw_role = message.get("role")
    role = raw_role if raw_role in KNOWN_ROLES else "unknown"
    with st.chat_message(role, avatar=AVATARS.get(role)):
        caption = role if role != "tool" else "tool result"
        st.caption(caption)
        if role == "tool" and message.get("tool_call_id"):
            st.text(f"for call {message.get('tool_call_id')}")
        _show_content(message.get("content"))
        if message.get("refusal"):
            st.caption("refusal")
            show_text(str(message["refusal"]))
        for call in message.get("tool_calls") or []:
            _show_tool_call(call)
        if message.get("function_call"):
            _show_tool_call({"function": message["function_call"]})


def show_messages(messages: list[dict[str, Any]] | None) -> None:
    """The conversation as a chat, then its raw JSON one click away."""
    if not messages:
        st.info("No messages: this interaction logged no conversation.")
        return
    for message in messages:
        show_message(message if isinstance(message, dict) else {"content": str(message)})
    with st.expander("Raw JSON"):
        st.json(messages, expanded=True)


def as_lines(messages: list[dict[str, Any]] | None) -> list[str]:
    """A message list as text lines, for diffs."""
    lines: list[str] = []
    for message in messages or []:
        lines.append(f"[{message.get('role')}]")
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, indent=1,
                                                                    ensure_ascii=False)
        lines.extend(text.splitlines() or [""])
        for call in message.get("tool_calls") or []:
            lines.extend(json.dumps(call, indent=1, ensure_ascii=False).splitlines())
    return lines


def show_diff(original: list[dict[str, Any]] | None, current: list[dict[str, Any]] | None) -> None:
    diff = list(difflib.unified_diff(as_lines(original), as_lines(current), "original",
                                     "current", lineterm="", n=3))
    if not diff:
        st.caption("The current message list is the original one.")
        return
    st.code("\n".join(diff), language="diff")


def last_answer(messages: list[dict[str, Any]] | None) -> str:
    """The text of the final assistant message (what a reviewer usually corrects)."""
    if messages and messages[-1].get("role") == "assistant":
        content = messages[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def with_answer(messages: list[dict[str, Any]] | None, answer: str) -> list[dict[str, Any]]:
    """The message list with its final assistant answer replaced (or added)."""
    result = [dict(m) for m in messages or []]
    if result and result[-1].get("role") == "assistant":
        edited = {k: v for k, v in result[-1].items() if k not in ("content", "refusal")}
        edited["content"] = answer
        result[-1] = edited
    else:
        result.append({"role": "assistant", "content": answer})
    return result
