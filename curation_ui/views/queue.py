"""Queue: the next pending item, newest first, reviewed one at a time from the keyboard
(A approve, X reject with the reason, 1-9 a canned reason, N needs work, Ctrl+Enter save the
edited answer, J skip, U undo, ? the keys).

Opening an item claims it for this reviewer (`POST /admin/queue/next`, which also answers the
queue's progress): two reviewers never get the same item. The claim is renewed every minute
while the item is open and released by the action or the skip. Items without a final answer
stay out of the queue unless the filter asks for them. The item pane is a fragment and the
actions run in callbacks: a key press reruns that pane alone, once."""

from __future__ import annotations

from typing import Any

import streamlit as st

from curation_ui.actions import action_panel, held, release, show_flash, undo_button
from curation_ui.browser import page_ready
from curation_ui.chat_view import escape_markdown, show_messages
from curation_ui.conflict import conflict_panel
from curation_ui.filters import filter_widgets
from curation_ui.item_header import show_header
from curation_ui.layout import review_columns
from curation_ui.reviewer_state import keep_work
from curation_ui.session import client, require_reviewer, reviewer
from curation_ui.workbench import (
    claim_line,
    keep_claim,
    progress_line,
    show_unreadable,
    side_panel,
    unreadable,
)
from tuneloop.errors import TuneloopError

require_reviewer()

SLOT = "queue_item"


def next_item(filters: dict[str, Any], skipped: list[str]
              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The reviewer's next item, claimed for them, and the queue's progress."""
    answer = client().next_item(reviewer=reviewer(), filter={"review": "pending", **filters},
                                skip=skipped, progress=True)
    return answer["item"], answer.get("progress")


def move_on(item_id: str, *, skip: bool) -> None:
    """After an action or a skip (in the widget's callback): the next run takes the next
    item (asking for it with the skipped ids releases this one's claim)."""
    if skip:
        st.session_state.setdefault("queue_skipped", []).append(item_id)
        keep_work()
    release(SLOT)


@st.fragment
def review_pane(filters: dict[str, Any]) -> None:
    """The item and its actions, as a fragment: a key press reruns this part alone, not the
    sidebar and the navigation, and the actions run in callbacks (one run per key press)."""
    require_reviewer()  # a fragment's run skips the page's top: the sign-in may have ended
    show_flash()
    if conflict_panel():
        release(SLOT)
        st.rerun()
    skipped: list[str] = st.session_state.setdefault("queue_skipped", [])
    if undo_button():
        release(SLOT)
        st.rerun()
    try:
        item, progress = held(SLOT, repr(sorted(filters.items())) + repr(skipped),
                              lambda: next_item(filters, skipped))
    except TuneloopError as exc:
        st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
        return
    if progress:
        st.caption(progress_line(progress, len(skipped)))
    if item is None:
        release(SLOT)
        st.success("Nothing pending here." if not skipped else "Only skipped items are left.")
        if skipped and st.button("Bring back the skipped items"):
            skipped.clear()
            keep_work()
            st.rerun()
        return

    if unreadable(item):
        show_unreadable(item)
        st.button("Skip for now", shortcut="J", on_click=move_on, args=(item["id"],),
                  kwargs={"skip": True})
        return
    page_ready(f"{item['id']}@{item['revision']}")
    show_header(item)
    claim_line(item)
    conversation, actions = review_columns()
    with conversation:
        show_messages(item["messages"], answer_in_editor=True)
    with actions:
        action_panel(item, key="queue", on_done=lambda: move_on(item["id"], skip=False))
    skip, history = st.columns(2)
    skip.button("Skip for now", shortcut="J", on_click=move_on, args=(item["id"],),
                kwargs={"skip": True}, width="stretch")
    if history.button("Open its history", width="stretch"):
        st.session_state["item_id"] = item["id"]
        st.switch_page("views/item.py")


st.title("Review queue")
side_panel()
queue_filters = filter_widgets("queue", review=False)
keep_claim(SLOT)
review_pane(queue_filters)
