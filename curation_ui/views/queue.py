"""Queue: the next pending item, newest first, reviewed one at a time from the keyboard
(A approve, X reject with the reason, N needs work, Ctrl+Enter save the edited answer,
J skip, U undo)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from curation_ui.actions import action_panel, held, release, show_flash, undo_button
from curation_ui.chat_view import escape_markdown, show_messages
from curation_ui.filters import filter_widgets
from curation_ui.item_header import show_header
from curation_ui.session import client, require_reviewer
from tuneloop.errors import TuneloopError

require_reviewer()

BATCH = 20
SLOT = "queue_item"


def next_item(filters: dict[str, Any], skipped: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The newest pending item not skipped, and how many are waiting (as text)."""
    cursor: str | None = None
    for _ in range(5):  # look past a few pages of skipped items
        page = client().interactions(review="pending", limit=BATCH, compact=True,
                                     cursor=cursor, **filters)
        waiting = [item for item in page["items"] if item["id"] not in skipped]
        cursor = page["next_cursor"]
        if waiting or cursor is None:
            break
    count = f"{len(waiting)}{'+' if cursor else ''}"
    return (waiting[0] if waiting else None), count


st.title("Review queue")
filters = filter_widgets("queue", review=False)
show_flash()
skipped: list[str] = st.session_state.setdefault("queue_skipped", [])
if undo_button():
    release(SLOT)
    st.rerun()
try:
    item, waiting = held(SLOT, repr(sorted(filters.items())) + repr(skipped),
                         lambda: next_item(filters, skipped))
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()
if item is None:
    release(SLOT)
    st.success("Nothing pending here." if not skipped else "Only skipped items are left.")
    if skipped and st.button("Bring back the skipped items"):
        skipped.clear()
        st.rerun()
    st.stop()

st.caption(f"{waiting} pending in this view · {len(skipped)} skipped")
show_header(item)
show_messages(item["messages"], answer_in_editor=True)
if action_panel(item, key="queue"):
    release(SLOT)
    st.rerun()
if st.button("Skip for now", shortcut="J"):
    skipped.append(item["id"])
    release(SLOT)
    st.rerun()
if st.button("Open its history"):
    st.session_state["item_id"] = item["id"]
    st.switch_page("views/item.py")
