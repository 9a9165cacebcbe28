"""Queue: the next pending item, newest first, reviewed one at a time from the keyboard
(A approve, X reject with the reason, N needs work, Ctrl+Enter save the edited answer,
J skip, U undo)."""

from __future__ import annotations

import time
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
UPCOMING = "queue_upcoming"  # the rest of the last page fetched: the next items, prefetched
FRESH_S = 60.0  # an older prefetched page is fetched again


def fetch_pending(filters: dict[str, Any], skipped: list[str]) -> tuple[list[dict[str, Any]],
                                                                         bool]:
    """The newest pending items not skipped, and whether more are waiting past them."""
    cursor: str | None = None
    for _ in range(5):  # look past a few pages of skipped items
        page = client().interactions(review="pending", limit=BATCH, compact=True,
                                     cursor=cursor, **filters)
        waiting = [item for item in page["items"] if item["id"] not in skipped]
        cursor = page["next_cursor"]
        if waiting or cursor is None:
            break
    return waiting, cursor is not None


def next_item(filters: dict[str, Any], skipped: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The next pending item and how many are waiting (as text). The page fetched last is
    kept: moving on takes its next item without asking the API (a stale one is caught by the
    revision check when acted on)."""
    identity = repr(sorted(filters.items()))
    kept = st.session_state.get(UPCOMING)
    if (kept is None or kept["identity"] != identity or not kept["items"]
            or time.monotonic() - kept["at"] > FRESH_S):
        items, more = fetch_pending(filters, skipped)
        kept = {"identity": identity, "items": items, "more": more, "at": time.monotonic()}
        st.session_state[UPCOMING] = kept
    items = [i for i in kept["items"] if i["id"] not in skipped]
    count = f"{len(items)}{'+' if kept['more'] else ''}"
    return (items[0] if items else None), count


def move_on(item_id: str, *, skip: bool) -> None:
    """After an action or a skip (in the widget's callback): drop the item from the prefetched
    page and let the next run take the next one."""
    if skip:
        st.session_state.setdefault("queue_skipped", []).append(item_id)
    kept = st.session_state.get(UPCOMING)
    if kept is not None:
        kept["items"] = [i for i in kept["items"] if i["id"] != item_id]
    release(SLOT)


@st.fragment
def review_pane(filters: dict[str, Any]) -> None:
    """The item and its actions, as a fragment: a key press reruns this part alone, not the
    sidebar and the navigation, and the actions run in callbacks (one run per key press)."""
    show_flash()
    skipped: list[str] = st.session_state.setdefault("queue_skipped", [])
    if undo_button():
        release(SLOT)
        st.session_state.pop(UPCOMING, None)
        st.rerun()
    try:
        item, waiting = held(SLOT, repr(sorted(filters.items())) + repr(skipped),
                             lambda: next_item(filters, skipped))
    except TuneloopError as exc:
        st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
        return
    if item is None:
        release(SLOT)
        st.session_state.pop(UPCOMING, None)
        st.success("Nothing pending here." if not skipped else "Only skipped items are left.")
        if skipped and st.button("Bring back the skipped items"):
            skipped.clear()
            st.rerun()
        return

    st.caption(f"{waiting} pending in this view · {len(skipped)} skipped")
    show_header(item)
    show_messages(item["messages"], answer_in_editor=True)
    action_panel(item, key="queue", on_done=lambda: move_on(item["id"], skip=False))
    st.button("Skip for now", shortcut="J", on_click=move_on, args=(item["id"],),
              kwargs={"skip": True})
    if st.button("Open its history"):
        st.session_state["item_id"] = item["id"]
        st.switch_page("views/item.py")


st.title("Review queue")
review_pane(filter_widgets("queue", review=False))
