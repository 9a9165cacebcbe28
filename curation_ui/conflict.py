"""After a 409 (someone reviewed or holds the item first): the reviewer stays on the item and
sees their version beside the current one; "Re-apply mine" sends their action again against
the current revision, "Keep the current one" drops theirs. Nothing they typed is lost until
they choose: "Your answer" has the reviewer's text as its own default, drawn by every run (a
value only put into the session state reaches the browser once, with the run that put it
there; were that run cut short by a rerun request, or its messages cleared by the next run
before they went out, the browser drew the editor empty and sent that back with the next
click). A re-apply that is refused for another reason (an empty answer, the API down) keeps
the panel and the text.

The panel never ends the run with `st.stop()`: on the Queue it is drawn inside a fragment,
and a click made while a fragment runs (e.g. on "Re-apply mine" as soon as it shows, while the
run that draws it has not ended) waits for that run to end; `st.stop()` discards such a
waiting rerun, so the click would be lost and the panel stay. The caller returns instead."""

from __future__ import annotations

from enum import Enum
from typing import Any

import streamlit as st

from curation_ui.actions import CONFLICT, flash, forget_draft, run_action
from curation_ui.browser import page_ready
from curation_ui.chat_view import escape_markdown, last_answer, show_text, with_answer
from curation_ui.session import client
from tuneloop.errors import TuneloopError


def pending_conflict() -> dict[str, Any] | None:
    value = st.session_state.get(CONFLICT)
    return value if isinstance(value, dict) else None


def _describe(conflict: dict[str, Any]) -> str:
    action = str(conflict["action"]).replace("_", " ")
    if conflict.get("messages") is not None:
        return "edit (approve your answer)"
    if conflict.get("reason"):
        return f"{action}: {conflict['reason']}"
    return action


class Panel(Enum):
    NONE = "none"  # no conflict pending: draw the item
    SHOWN = "shown"  # the panel is drawn: draw nothing else (return, never `st.stop()`)
    RESOLVED = "resolved"  # re-applied or dropped on this run: rerun


def conflict_panel() -> Panel:
    """Draw the pending conflict, if any, and say what the caller does next."""
    conflict = pending_conflict()
    if conflict is None:
        return Panel.NONE
    try:
        current = client().interaction(conflict["id"])
    except TuneloopError as exc:
        st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
        return Panel.SHOWN
    if conflict.get("code") == "claimed":
        headline = "Another reviewer holds this item; nothing was changed."
    else:
        headline = "Someone else reviewed this item while you were looking at it; nothing was " \
                   "changed. Your version is kept below."
    st.warning(headline)
    st.caption(escape_markdown(str(conflict.get("message") or "")))
    mine_column, theirs_column = st.columns(2)
    mine_key = f"conflict-mine-{conflict['id']}-{conflict['seen_revision']}"
    with mine_column:
        st.subheader("Your version")
        st.text(_describe(conflict))
        if conflict.get("messages") is not None:
            st.text_area("Your answer", value=last_answer(conflict["messages"]), key=mine_key,
                         height=220)
    with theirs_column:
        st.subheader("Current version")
        last = (current.get("revisions") or [{}])[-1]
        who = last.get("reviewer") or current.get("claimed_by") or "—"
        st.text(f"{current.get('review')} · revision {current.get('revision')} · by {who}")
        if last.get("reason"):
            st.text(f"reason: {last['reason']}")
        show_text(last_answer(current.get("current")) or "(no answer)")
    apply, keep = st.columns(2)
    answer = str(st.session_state.get(mine_key) or "")
    if apply.button("Re-apply mine", type="primary", width="stretch", key="conflict-apply"):
        if conflict.get("messages") is None or answer.strip():
            return _re_apply(conflict, current, answer)
        st.error("Your answer is empty: write it, or keep the current one.")  # nothing sent
    if keep.button("Keep the current one", width="stretch", key="conflict-keep"):
        st.session_state.pop(CONFLICT, None)
        forget_draft(conflict["id"])
        flash("success", "Kept the current version; yours was dropped.")
        return Panel.RESOLVED
    page_ready(f"conflict-{conflict['id']}-{conflict['seen_revision']}")
    return Panel.SHOWN


def _re_apply(conflict: dict[str, Any], current: dict[str, Any], answer: str) -> Panel:
    """Send the reviewer's action again, against the current revision. Refused other than by
    a new conflict (that one is pending then), the panel stays with what they wrote, under
    the flashed error."""
    messages = conflict.get("messages")
    if messages is not None:
        messages = with_answer(messages, answer)
    st.session_state.pop(CONFLICT, None)
    if not run_action(current, str(conflict["action"]), reason=conflict.get("reason"),
                      messages=messages) and pending_conflict() is None:
        st.session_state[CONFLICT] = {**conflict, "messages": messages}
    return Panel.RESOLVED
