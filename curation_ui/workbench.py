"""What surrounds the item under review: the queue's progress line, who holds the item (and
keeping this reviewer's claim alive while it is open), the guidelines panel (Markdown from the
`ui_guidelines` setting: our operators' words, not a client's) and the keys sheet (`?`)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from curation_ui.browser import key_sheet
from curation_ui.chat_view import escape_markdown
from curation_ui.session import client, reviewer, session_valid, ui_settings
from tuneloop.errors import Conflict, TuneloopError

RENEW_EVERY_S = 60
KEYS = [("A", "approve"), ("X", "reject with the reason (asks for one when the box is empty)"),
        ("1-9", "put a canned reason in the reason box (and focus it: Enter rejects)"),
        ("Enter", "in the reason box: reject"),
        ("N", "needs work"), ("Ctrl+Enter", "in the answer: save the edit as approved"),
        ("J", "skip for now"), ("U", "undo your last action"), ("?", "this sheet")]


def progress_line(progress: dict[str, Any], skipped: int) -> str:
    """"37 of 99 pending · 12 by you today", with what else is held or left out."""
    more = "+" if progress.get("exact") is False else ""  # counts so far: lower bounds
    parts = [f"{progress['pending']:,}{more} of {progress['total']:,}{more} pending",
             f"{progress['reviewed_by_you']:,} by you today"]
    if progress.get("claimed_by_others"):
        parts.append(f"{progress['claimed_by_others']:,} open with other reviewers")
    if progress.get("untrainable"):
        parts.append(f"{progress['untrainable']:,} without an answer (filter: Untrainable "
                     "items)")
    if skipped:
        parts.append(f"{skipped} skipped")
    if progress.get("exact") is False:
        parts.append("counts so far: the search matches too much to count in time")
    return " · ".join(parts)


def _until(value: Any) -> str:
    return str(value or "")[11:16] + " UTC" if value else "—"


def claim_line(item: dict[str, Any]) -> None:
    """Who holds the item: this reviewer, another one (warned), or nobody."""
    holder = item.get("claimed_by")
    if not holder:
        st.caption("Nobody holds this item.")
    elif holder == reviewer():
        st.caption(escape_markdown(f"You hold this item until {_until(item['claimed_until'])} "
                                   "(renewed while it is open)."))
    else:
        st.warning(escape_markdown(f"{holder} holds this item until "
                                   f"{_until(item['claimed_until'])}: your action would be "
                                   "refused until then."), icon=":material/lock:")


@st.fragment(run_every=RENEW_EVERY_S)
def keep_claim(slot: str) -> None:
    """Renew this reviewer's claim on the item the page holds in `slot`, every minute (the
    first run for an item only marks it: opening the item has just claimed it)."""
    kept = st.session_state.get(slot)
    item = kept[1][0] if kept is not None and kept[1] else None
    if not isinstance(item, dict) or not session_valid():
        return
    renewed: set[str] = st.session_state.setdefault("claim_renewals", set())
    if item["id"] not in renewed:
        renewed.add(item["id"])
        return
    try:
        client().claim(item["id"], reviewer=reviewer())
    except Conflict as exc:
        st.warning(escape_markdown(f"Your hold on this item was lost: {exc.message}"))
    except TuneloopError:
        pass  # the next renewal tries again; an action still checks the revision


def side_panel() -> None:
    """The guidelines and the keys, in the sidebar."""
    guidelines = ui_settings().ui_guidelines.strip()
    key_sheet(KEYS)
    with st.sidebar:
        if guidelines:
            with st.expander("Review guidelines", expanded=True):
                st.markdown(guidelines)
        with st.expander("Keys (?)"):
            st.table({"key": [k for k, _ in KEYS], "does": [d for _, d in KEYS]})


def unreadable(item: dict[str, Any]) -> bool:
    """The admin API answers a stored row it cannot write as JSON with a placeholder
    (`{"id", "error"}`): one bad row must not break a page for every reviewer."""
    return "error" in item and "revision" not in item


def show_unreadable(item: dict[str, Any]) -> None:
    st.error(escape_markdown(
        f"Interaction {item['id']} can't be shown: {item['error']}. The server log names "
        "why; an admin can look at it with `tuneloop sql`. Skip it to go on."))
