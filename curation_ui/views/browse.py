"""Browse: every interaction, filtered and searched, as a table; select rows to approve,
reject, mark as needing work or tag them at once, or open one."""

from __future__ import annotations

from collections import Counter
from typing import Any

import streamlit as st

from curation_ui.actions import flash, show_flash
from curation_ui.chat_view import escape_markdown, last_answer
from curation_ui.filters import filter_widgets, list_failure
from curation_ui.session import client, require_reviewer, reviewer
from curation_ui.styles import inject_styles
from curation_ui.workbench import unreadable
from tuneloop.errors import TuneloopError

require_reviewer()

PAGE_SIZES = (50, 100, 200)
TABLE_KEY = "browse_table"
CLIP_CHARS = 400
UNTRAINABLE = {"not_reviewable": "✗ embeddings", "upstream_error": "✗ upstream error",
               "client_disconnected": "✗ client left", "upstream_cut": "✗ stream cut",
               "timeout": "✗ timeout", "no_answer": "✗ empty answer"}
ROW_PX = 16  # 50 rows and the column header fit a 1440×900 window
HEADER_PX = 36  # the grid's header row keeps its own height
COLUMNS = {
    "logged": st.column_config.TextColumn("logged (UTC)", width=112),
    "review": st.column_config.TextColumn("review", width=68),
    "rev": st.column_config.NumberColumn("rev", width=34),
    "model": st.column_config.TextColumn("model", width=92),
    "prompt": st.column_config.TextColumn("prompt", width=160),
    "answer": st.column_config.TextColumn("answer", width=270),
    "tags": st.column_config.TextColumn("tags", width=90),
    "score": st.column_config.TextColumn("score", width=48),  # "+0.50", blank without
    "error": st.column_config.CheckboxColumn("err", width=30),
    "trainable": st.column_config.TextColumn(
        "trainable", width=120, help="blank: trainable; else why not (no answer, the stream "
        "was cut or the client left, an upstream error, …)"),
    "id": None,  # kept in the data (Open uses it), not worth a column of the screen
}


def first_user_text(messages: list[dict[str, Any]] | None) -> str:
    for message in messages or []:
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def row(item: dict[str, Any]) -> dict[str, Any]:
    def clip(text: str) -> str:
        flat = " ".join(text.split())  # one line per row: newlines would hide the rest
        return flat if len(flat) <= CLIP_CHARS else flat[:CLIP_CHARS] + "…"

    return {"logged": item["created_at"][:16].replace("T", " "), "review": item["review"] or "",
            "rev": item["revision"], "model": item.get("model") or "",
            "prompt": clip(first_user_text(item["messages"])),
            "answer": clip(last_answer(item["messages"])), "tags": ", ".join(item["tags"]),
            "score": "" if item["score"] is None else f"{item['score']:+.2f}",
            "error": item.get("status_code") not in (200, None),
            "trainable": untrainable(item), "id": item["id"]}


def untrainable(item: dict[str, Any]) -> str:
    """Blank for a trainable item, else why not in a word or two."""
    if item.get("trainable", True):
        return ""
    return UNTRAINABLE.get(str(item.get("untrainable_reason")),
                           str(item.get("untrainable_reason") or "no"))


def report(answer: dict[str, Any], what: str) -> None:
    counts = Counter(r["status"] for r in answer["results"])
    summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
    kind = "success" if set(counts) == {"ok"} else "warning"
    flash(kind, f"{what}: {summary}.")


def bulk(items: list[dict[str, Any]], action: str, reason: str | None) -> None:
    try:
        answer = client().bulk_review(
            action, reviewer=reviewer(), ids=[i["id"] for i in items], reason=reason,
            expected_revisions={i["id"]: i["revision"] for i in items})
    except TuneloopError as exc:
        flash("error", f"Nothing saved: {exc.message}")
        return
    report(answer, action.replace("_", " "))


filters = filter_widgets("browse", review=True)
inject_styles()
show_flash()
size = st.sidebar.selectbox("Rows per page", PAGE_SIZES, key="browse-size")
cursors: list[str | None] = st.session_state.setdefault("browse_cursors", [None])
signature = repr(sorted(filters.items())) + str(size)
if st.session_state.get("browse_signature") != signature:  # new filters: back to page 1
    st.session_state["browse_signature"] = signature
    cursors[:] = [None]
try:
    page = client().interactions(limit=size, cursor=cursors[-1], compact=True, **filters)
except TuneloopError as exc:
    st.error(escape_markdown(list_failure(exc)))
    st.stop()
items: list[dict[str, Any]] = [i for i in page["items"] if not unreadable(i)]
broken = [i["id"] for i in page["items"] if unreadable(i)]
if broken:
    st.warning(f"{len(broken)} stored row(s) on this page can't be shown (the server log "
               f"says why): {', '.join(broken)}")
if not items:
    st.info("No interaction matches these filters.")
    st.stop()

event = st.dataframe([row(i) for i in items], key=TABLE_KEY, on_select="rerun",
                     selection_mode="multi-row", hide_index=True, width="stretch",
                     row_height=ROW_PX, height=HEADER_PX + ROW_PX * min(len(items), 50) + 3,
                     column_config=COLUMNS)
chosen = [items[n] for n in event.selection.rows if n < len(items)]
previous, page_label, following = st.sidebar.columns([1, 1.4, 1])
if previous.button("← Newer", disabled=len(cursors) == 1):
    cursors.pop()
    st.rerun()
page_label.caption(f"page {len(cursors)} · {len(items)} rows · {len(chosen)} selected")
if following.button("Older →", disabled=page["next_cursor"] is None):
    cursors.append(page["next_cursor"])
    st.rerun()

if not chosen:
    st.caption("Select rows (click the left edge, shift-click for a range) to act on them.")
    st.stop()
with st.form("bulk", border=True):
    st.caption(f"{len(chosen)} selected")
    reason = st.text_input("Reason (required to reject)", max_chars=2000)
    approve, reject, needs_work = st.columns(3)
    do_approve = approve.form_submit_button("Approve selected", type="primary",
                                            width="stretch")
    do_reject = reject.form_submit_button("Reject selected", width="stretch")
    do_needs_work = needs_work.form_submit_button("Needs work", width="stretch")
    tags = st.text_input("Tags to add or remove (comma separated)", max_chars=500)
    add, remove = st.columns(2)
    do_add = add.form_submit_button("Add tags", width="stretch")
    do_remove = remove.form_submit_button("Remove tags", width="stretch")
if do_approve or do_needs_work:
    bulk(chosen, "approve" if do_approve else "needs_work", reason.strip() or None)
    st.rerun()
if do_reject:
    if not reason.strip():
        st.error("Write why these examples are rejected.")
    else:
        bulk(chosen, "reject", reason.strip())
        st.rerun()
if do_add or do_remove:
    names = [t.strip() for t in tags.split(",") if t.strip()]
    try:
        answer = client().bulk_tags([i["id"] for i in chosen], reviewer=reviewer(),
                                    add=names if do_add else [], remove=[] if do_add else names)
        report(answer, "tags")
    except TuneloopError as exc:
        flash("error", f"Tags not saved: {exc.message}")
    st.rerun()
if len(chosen) == 1 and st.button("Open the selected item"):
    st.session_state["item_id"] = chosen[0]["id"]
    st.switch_page("views/item.py")
