"""Queue: the next pending item, newest first, reviewed one at a time from the keyboard
(A approve, X reject with the reason, 1-9 a canned reason, N needs work, Ctrl+Enter save the
edited answer, J skip, U undo: the undone item is claimed for the reviewer and shown again,
? the keys).

Opening an item claims it for this reviewer (`POST /admin/queue/next`, which also answers the
queue's progress): two reviewers never get the same item. The claim is renewed every minute
while the item is open and released by the action or the skip. Items without a final answer
stay out of the queue unless the filter asks for them. The item pane is a fragment and the
actions run in callbacks: a key press reruns that pane alone, once."""

from __future__ import annotations

from typing import Any

import streamlit as st

from curation_ui.actions import (
    REASON_LABEL,
    action_panel,
    flash,
    held,
    release,
    show_flash,
    undo_button,
)
from curation_ui.browser import page_ready
from curation_ui.chat_view import escape_markdown, show_messages
from curation_ui.conflict import Panel, conflict_panel
from curation_ui.filters import filter_widgets, list_failure
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
from tuneloop.errors import Conflict, TuneloopError

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


def bring_back(item_id: str | None) -> None:
    """After an undo: the undone item, pending again, is claimed for this reviewer and is the
    one shown next (the item on screen is let go); someone else may have taken it meanwhile."""
    kept = st.session_state.get(SLOT)
    shown = kept[1][0] if kept is not None and kept[1] else None
    release(SLOT)
    if not item_id:
        return
    skipped: list[str] = st.session_state.setdefault("queue_skipped", [])
    if item_id in skipped:
        skipped.remove(item_id)
        keep_work()
    try:
        if isinstance(shown, dict) and shown.get("id") != item_id:
            client().release(shown["id"], reviewer=reviewer())
        client().claim(item_id, reviewer=reviewer())
    except Conflict as exc:
        flash("warning", f"Undone, but the item is not yours to review now: {exc.message}")
    except TuneloopError as exc:
        flash("warning", f"Undone, but the item could not be claimed again: {exc.message}")


@st.fragment
def review_pane(filters: dict[str, Any]) -> None:
    """The item and its actions, as a fragment: a key press reruns this part alone, not the
    sidebar and the navigation, and the actions run in callbacks (one run per key press)."""
    require_reviewer()  # a fragment's run skips the page's top: the sign-in may have ended
    show_flash()
    conflict = conflict_panel()
    if conflict is Panel.RESOLVED:
        release(SLOT)
        st.rerun()
    if conflict is Panel.SHOWN:
        return  # not st.stop(): it would drop a click made on the panel while this run ends
    skipped: list[str] = st.session_state.setdefault("queue_skipped", [])
    if undo_button():
        bring_back(st.session_state.pop("undone_item", None))
        st.rerun()
    try:
        item, progress = held(SLOT, repr(sorted(filters.items())) + repr(skipped),
                              lambda: next_item(filters, skipped))
    except TuneloopError as exc:
        st.error(escape_markdown(list_failure(exc)))
        return
    if progress:
        st.caption(progress_line(progress, len(skipped)))
    if item is None:
        page_ready("nothing")
        release(SLOT)
        st.success("Nothing pending here." if not skipped else "Only skipped items are left.")
        if skipped and st.button("Bring back the skipped items"):
            skipped.clear()
            keep_work()
            st.rerun()
        return

    if unreadable(item):
        show_unreadable(item)
        page_ready(f"{item['id']}@unreadable")
        st.button("Skip for now", shortcut="J", on_click=move_on, args=(item["id"],),
                  kwargs={"skip": True})
        return
    shown = f"{item['id']}@{item['revision']}"
    # one container per item (its key names the item): on a new item the previous one's
    # elements are not reused under the new header while the new ones are drawn
    with st.container(key=f"queue-pane-{item['id']}-{item['revision']}"):
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
    # last: the keys act again once the header, the conversation and the editor of this item
    # are all drawn (a key pressed while the pane changes never acts on an unseen item)
    page_ready(shown, reason_label=REASON_LABEL)


st.title("Review queue")
side_panel()
queue_filters = filter_widgets("queue", review=False)
keep_claim(SLOT)
review_pane(queue_filters)
