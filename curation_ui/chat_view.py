"""Readable, safe rendering of a message list.

Model output (and anything a client sent) is untrusted. Message text is rendered as Markdown
through `curation_ui.render` (raw HTML escaped, links only to http/https/mailto, no images
loaded, sanitized by nh3) and drawn in one `st.html` element per conversation; the raw text is
one toggle away. Labels and captions carry our own words only, with every value escaped.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from typing import Any

import streamlit as st

from curation_ui.render import json_html, markdown_html, plain_html
from curation_ui.styles import inject_styles
from curation_ui.word_diff import word_diff_html

FOLD_CHARS = 1500
FOLD_LINES = 24
GIST_CHARS = 160
FOLDED_ROLES = ("system", "developer")
RAW_KEY = "chat-raw-text"
KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool", "function")

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def escape_markdown(text: str) -> str:
    """Text for a Markdown element (alerts, labels) that shows as the same text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _folded(body: str, text: str) -> str:
    """A long text shown in one place: clipped by CSS until "Show all" opens it (the same
    element grows; nothing is drawn twice)."""
    if len(text) <= FOLD_CHARS and text.count("\n") <= FOLD_LINES:
        return f'<div class="tl-body">{body}</div>'
    return (f'<div class="tl-long"><div class="tl-body">{body}</div>'
            '<details class="tl-more"><summary>'
            f'<span class="tl-all">Show all {len(text):,} characters</span>'
            '<span class="tl-less">Show less</span></summary></details></div>')


def text_html(text: str, *, raw: bool) -> str:
    return _folded(plain_html(text) if raw else markdown_html(text), text)


def show_text(text: str) -> None:
    """Plain text, wrapping between words; long text folded in place."""
    inject_styles()
    st.html(text_html(text, raw=True))


def _content_html(content: Any, *, raw: bool, role: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        if role in ("tool", "function") and not raw:
            try:
                return _folded(json_html(json.loads(content)), content)
            except ValueError:
                return text_html(content, raw=True)
        return text_html(content, raw=raw)
    if not isinstance(content, list):
        return json_html(content)
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part, dict):
            parts.append(text_html(str(part.get("text") or ""), raw=raw))
        elif kind == "image_url" and isinstance(part, dict):
            url = str((part.get("image_url") or {}).get("url") or "")
            shown = url[:200] + (" …" if len(url) > 200 else "")
            parts.append(f'<div class="tl-note">image (not loaded): {html.escape(shown)}</div>')
        else:
            parts.append(json_html(part))
    return "".join(parts)


def _tool_call_html(call: Any) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return json_html(call)
    name = html.escape(str(function.get("name")))
    call_id = html.escape(str(call.get("id"))) if isinstance(call, dict) else ""
    return (f'<div class="tl-call">tool call <code>{name}</code> · id {call_id}</div>'
            + json_html(str(function.get("arguments") or "")))


def _gist(message: dict[str, Any]) -> str:
    """A message's text on one line (what its folded summary shows), escaped."""
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    text = " ".join(str(content or "").split())
    if not text:
        calls = [str((c.get("function") or {}).get("name")) for c in
                 message.get("tool_calls") or [] if isinstance(c, dict)]
        text = f"tool call {', '.join(calls)}" if calls else "(no text)"
    return html.escape(text[:GIST_CHARS] + ("…" if len(text) > GIST_CHARS else ""))


def message_html(message: dict[str, Any], *, raw: bool = False,
                 answer_in_editor: bool = False, folded: bool = False) -> str:
    """One message as a block (role, text, tool calls); `answer_in_editor` leaves its text
    out: the reviewer's editor shows and edits it. `folded`: one line (role and the start of
    its text) that opens to the whole message on a click."""
    raw_role = message.get("role")
    role = raw_role if raw_role in KNOWN_ROLES else "unknown"
    label = "tool result" if role == "tool" else role
    parts = [] if folded else [f'<div class="tl-role">{label}</div>']
    if role == "tool" and message.get("tool_call_id"):
        parts.append(f'<div class="tl-call">for call {html.escape(str(message["tool_call_id"]))}'
                     '</div>')
    if answer_in_editor:
        parts.append('<div class="tl-note">The answer is in the editor.</div>')
    else:
        parts.append(_content_html(message.get("content"), raw=raw, role=role))
    if message.get("refusal"):
        parts.append('<div class="tl-role">refusal</div>'
                     + text_html(str(message["refusal"]), raw=True))
    for call in message.get("tool_calls") or []:
        parts.append(_tool_call_html(call))
    if message.get("function_call"):
        parts.append(_tool_call_html({"function": message["function_call"]}))
    inner = "".join(parts)
    if folded:
        inner = (f'<details class="tl-fold"><summary><span class="tl-role">{label}</span>'
                 f'<span class="tl-gist">{_gist(message)}</span></summary>{inner}</details>')
    return (f'<section class="tl-msg tl-{role}" dir="auto" role="group" '
            f'aria-label="Chat message from {role}">{inner}</section>')


def _earlier(messages: list[dict[str, Any]]) -> int:
    """How many messages come before the last user turn (they fold to one line each)."""
    users = [n for n, m in enumerate(messages) if m.get("role") == "user"]
    return users[-1] if users else 0


def conversation_html(messages: list[Any], *, raw: bool = False,
                      answer_in_editor: bool = False) -> str:
    """The whole conversation as one HTML block. Every client-written value in it went
    through the sanitizer or `html.escape`. Under review (`answer_in_editor`) the system
    prompt and the turns before the last user message are folded to one line each, so the
    last question, the answer and the actions fit one screen."""
    blocks = []
    dicts = [m if isinstance(m, dict) else {"content": str(m)} for m in messages]
    last = len(dicts) - 1
    earlier = _earlier(dicts) if answer_in_editor else 0
    for number, as_dict in enumerate(dicts):
        hide = (answer_in_editor and number == last and as_dict.get("role") == "assistant")
        fold = answer_in_editor and not hide and (
            number < earlier or as_dict.get("role") in FOLDED_ROLES)
        blocks.append(message_html(as_dict, raw=raw, answer_in_editor=hide, folded=fold))
    last_role = dicts[-1].get("role") if dicts else None
    if answer_in_editor and last_role != "assistant":
        blocks.append('<section class="tl-msg tl-assistant" role="group" aria-label="Chat '
                      'message from assistant"><div class="tl-role">assistant</div><div '
                      'class="tl-note">No answer was logged: write one in the editor.'
                      '</div></section>')
    return f'<div class="tl-chat">{"".join(blocks)}</div>'


def raw_toggle() -> bool:
    """The page's "Raw text" switch (Markdown rendering off); True while it is on."""
    return bool(st.toggle("Raw text", key=RAW_KEY))


def show_messages(messages: list[dict[str, Any]] | None, *,
                  answer_in_editor: bool = False) -> None:
    """The conversation; with `answer_in_editor`, the final assistant answer is left to the
    editor (shown once, edited in place)."""
    inject_styles()
    if not messages:
        st.info("No messages: this interaction logged no conversation.")
        return
    st.html(conversation_html(messages, raw=bool(st.session_state.get(RAW_KEY)),
                              answer_in_editor=answer_in_editor))


def show_answer_diff(original: str, edited: str) -> None:
    """What the reviewer changed in the answer, word by word (nothing when unchanged)."""
    if edited == original:
        return
    inject_styles()
    st.caption("Your changes to the answer")
    st.html(word_diff_html(original, edited))


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
