"""The facts about an interaction, on one compact line above its conversation: endpoint,
model, finish (marked when the call did not complete, or its answer was cut by max_tokens),
user, session, tags, app feedback,
time, review state and the id (small, selected whole by one click). Every value is escaped."""

from __future__ import annotations

import html
import json
from typing import Any

import streamlit as st

from curation_ui.chat_view import raw_toggle
from curation_ui.styles import inject_styles

ERROR_CHARS = 300


def failed(item: dict[str, Any]) -> bool:
    """True when the call did not end normally: a finish other than completed, or an HTTP
    status of 400 or more."""
    status = item.get("status_code")
    finish = item.get("finish")
    return (finish is not None and finish != "completed") or (
        isinstance(status, int) and status >= 400)


def cut_by_max_tokens(item: dict[str, Any]) -> bool:
    """True when the logged answer stopped at the token limit: finish_reason "length" in
    choice 0 (chat, legacy completions) or a response "incomplete" at max_output_tokens.
    Such an answer is complete as a call but cut as a text."""
    response = item.get("response")
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError:
            return False
    if not isinstance(response, dict):
        return False
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason") == "length"
    details = response.get("incomplete_details")
    return (response.get("status") == "incomplete" and isinstance(details, dict)
            and details.get("reason") == "max_output_tokens")


def _field(key: str, value: Any, css: str = "tl-v") -> str:
    return (f'<span><span class="tl-k">{html.escape(key)}</span>'
            f'<span class="{css}">{html.escape(str(value))}</span></span>')


def header_html(item: dict[str, Any]) -> str:
    status = item.get("status_code")
    finish = str(item.get("finish") or "unknown")
    cut = cut_by_max_tokens(item)
    if cut:
        finish = "cut by max_tokens"
    outcome = finish if status is None else f"{finish} · {status}"
    parts = [
        _field("", item.get("endpoint") or "—"),
        _field("model", item.get("model") or "—"),
        _field("finish", outcome, "tl-bad" if cut or failed(item) else "tl-ok"),
    ]
    if item.get("user_id"):
        parts.append(_field("user", item["user_id"]))
    if item.get("session_id"):
        parts.append(_field("session", item["session_id"]))
    tags = "".join(f'<span class="tl-tag">{html.escape(str(t))}</span>'
                   for t in item.get("tags") or [])
    parts.append(f'<span><span class="tl-k">tags</span>{tags or "—"}</span>')
    score = item.get("score")
    parts.append(_field("feedback", "—" if score is None
                        else f"{score:+.2f} ({item.get('feedback_count')})"))
    logged = str(item.get("created_at") or "")[:19].replace("T", " ")
    parts.append(f'<span class="tl-v" title="{html.escape(logged)} UTC">'
                 f"{html.escape(logged[:16])}</span>")
    if item.get("review") is not None:
        parts.append(_field("", f"{item.get('review')} · revision {item.get('revision')}"))
    parts.append(f'<span class="tl-id" title="interaction id">{html.escape(str(item["id"]))}'
                 "</span>")
    line = f'<div class="tl-head">{"".join(parts)}</div>'
    error = str(item.get("error") or "")
    if error:
        shown = error[:ERROR_CHARS] + ("…" if len(error) > ERROR_CHARS else "")
        line += f'<div class="tl-error" title="{html.escape(shown)}">{html.escape(shown)}</div>'
    return line


def show_header(item: dict[str, Any]) -> None:
    """The header line, with the page's "Raw text" switch at its right end."""
    inject_styles()
    facts, switch = st.columns([0.88, 0.12], vertical_alignment="center")
    with facts:
        st.html(header_html(item))
    with switch:
        raw_toggle()
