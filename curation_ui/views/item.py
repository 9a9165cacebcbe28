"""Item: one interaction with its conversation, who holds it, review actions, tags, revision
history, a diff of the original against the current message list, and the logged JSON. Once
an item is shown the focus leaves the id box, so the keys act on the item."""

from __future__ import annotations

import streamlit as st

from curation_ui.actions import (
    REASON_LABEL,
    action_panel,
    held,
    release,
    show_flash,
    undo_button,
)
from curation_ui.browser import blur_on_enter, page_ready
from curation_ui.chat_view import (
    escape_markdown,
    last_answer,
    show_answer_diff,
    show_diff,
    show_messages,
)
from curation_ui.conflict import Panel, conflict_panel
from curation_ui.item_header import show_header
from curation_ui.layout import review_columns
from curation_ui.session import client, require_reviewer, reviewer
from curation_ui.workbench import claim_line, show_unreadable, side_panel, unreadable
from tuneloop.errors import NotFound, TuneloopError

require_reviewer()

SLOT = "item_shown"

st.title("Item")
if "id" in st.query_params and "item_id" not in st.session_state:
    st.session_state["item_id"] = st.query_params["id"]
blur_on_enter("Interaction id")
item_id = st.text_input("Interaction id", key="item_id", max_chars=64).strip()
side_panel()
show_flash()
conflict = conflict_panel()
if conflict is Panel.RESOLVED:
    release(SLOT)
    st.rerun()
if conflict is Panel.SHOWN:
    st.stop()  # a whole-page run (no fragment): a click made meanwhile interrupts it at once
if undo_button():
    release(SLOT)
    st.rerun()
if not item_id:
    st.info("Enter an interaction id, or open one from the Queue or Browse page.")
    st.stop()
if st.button("Reload", icon=":material/refresh:"):
    release(SLOT)
try:
    item = held(SLOT, item_id, lambda: client().interaction(item_id))
except NotFound:
    st.error("No interaction has this id.")
    st.stop()
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()

if unreadable(item):
    show_unreadable(item)
    page_ready(f"{item['id']}@unreadable")
    st.stop()
show_header(item)
claim_line(item)
conversation, history, diff, raw = st.tabs(["Conversation", "History", "Original vs current",
                                            "Logged JSON"])
with conversation:
    chat, actions = review_columns() if item["reviewable"] else (st.container(), None)
    with chat:
        show_messages(item["current"], answer_in_editor=item["reviewable"])
    if actions is not None:
        with actions:
            action_panel(item, key="item", on_done=lambda: release(SLOT))
    else:
        st.info("Embeddings are not reviewable.")
    with st.form("tags", border=True):
        st.caption("Tags (added or removed beside the logged ones)")
        keep = st.multiselect("Current tags", item["tags"], default=item["tags"])
        added = st.text_input("Add tags (comma separated)", max_chars=500)
        if st.form_submit_button("Save tags"):
            new = [t.strip() for t in added.split(",") if t.strip()]
            removed = [t for t in item["tags"] if t not in keep]
            try:
                client().tag(item["id"], reviewer=reviewer(), add=new, remove=removed)
                release(SLOT)
                st.rerun()
            except TuneloopError as exc:
                st.error(escape_markdown(exc.message))
with history:
    if not item["revisions"]:
        st.caption("No review yet (revision 0).")
    else:
        st.dataframe(
            [{"revision": r["revision"], "when": r["created_at"][:19].replace("T", " "),
              "reviewer": r["reviewer"], "action": r["action"], "state": r["state"],
              "reason": r["reason"] or "", "edited": r["messages"] is not None}
             for r in item["revisions"]], hide_index=True, width="stretch")
    if item.get("feedback"):
        shown, total = len(item["feedback"]), item.get("feedback_count") or 0
        st.caption("Feedback from the app" if total <= shown
                   else f"Feedback from the app: the newest {shown} of {total}")
        st.dataframe(item["feedback"], hide_index=True, width="stretch")
with diff:
    show_answer_diff(last_answer(item["original"]), last_answer(item["current"]))
    show_diff(item["original"], item["current"])
    if item.get("alternatives"):
        st.caption("Other choices the model returned (n > 1)")
        show_messages(item["alternatives"])
with raw:
    if item.get("too_big"):
        st.caption("Cut (…): the item is too big to show whole here; the stored row is whole.")
    st.caption("request (as the app sent it)")
    st.json(item.get("request"), expanded=False)
    if item.get("sent_request") is not None:
        st.caption("sent_request (what the target received: its route transforms changed it)")
        st.json(item["sent_request"], expanded=False)
    st.caption("response")
    st.json(item.get("response"), expanded=False)
# last: the keys act again (and not on the id box) once the whole item is drawn
page_ready(f"{item['id']}@{item['revision']}", reason_label=REASON_LABEL)
