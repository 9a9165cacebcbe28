"""The review actions on one item: approve, reject with a reason (typed, or a canned one on the
keys 1-9), needs work, edit the answer or the whole message list (saved as approved), undo.
Shared by the Queue and Item pages.

The actions run in widget callbacks (one script run per key press). Every call sends the
revision the reviewer saw, and exactly one call per (item, revision) leaves a session: a second
delivery of the same submit is dropped. When someone else acted first (409), nothing is
overwritten and nothing typed is lost: the page stays on the item with the reviewer's version
beside the current one (`conflict.py`). An item without a final answer (upstream error, cut
stream, empty answer) can't be approved; the panel says why and offers the editor. The typed
answer is kept in the browser while it is typed (`browser.py`), so a reload brings it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from curation_ui.browser import DRAFT_MAX_AGE_S, DRAFT_PREFIX, browser, draft_prefix, focus
from curation_ui.chat_view import (
    escape_markdown,
    last_answer,
    show_answer_diff,
    show_text,
    with_answer,
)
from curation_ui.reviewer_state import keep_work
from curation_ui.session import client, reviewer, session_valid, ui_settings
from tuneloop.errors import Conflict, TuneloopError

FLASH = "flash"
ACTED = "acted"
CONFLICT = "conflict"
EDITING = "editing"  # editor widget key -> the item@revision whose text it was drawn with
RESTORED = "drafts_restored"  # editor widget key -> the draft restored into it (its default)
CANNED = "canned_reasons"  # reason box key -> the canned reason last put in it (its default)
REASON_LABEL = "Reason (required to reject, optional for needs work)"
NO_REASON = ("A reject needs a reason: press 1-9 for one of the reasons below, or click the "
             "reason box and write it (Enter rejects).")
T = TypeVar("T")


def flash(kind: str, message: str) -> None:
    """A message shown once, after the rerun that follows an action."""
    st.session_state[FLASH] = (kind, message)


def show_flash() -> None:
    """The pending message, in a slot that is there (empty) when there is none: the elements
    below keep their places, so the browser updates them instead of drawing them anew."""
    slot = st.empty()
    kind, message = st.session_state.pop(FLASH, (None, None))
    show = {"success": slot.success, "warning": slot.warning, "error": slot.error}.get(kind or "")
    if show is not None and message:
        show(escape_markdown(message))  # API messages may quote what a client sent


def held(slot: str, identity: str, fetch: Callable[[], T]) -> T:
    """What a page shows in `slot`, kept across reruns until `release(slot)` (or until
    `identity` changes). A click then acts on the revision the reviewer saw: were the item
    fetched again on the click's rerun, a newer revision would silently replace it and the
    conflict check could not work."""
    kept = st.session_state.get(slot)
    if kept is not None and kept[0] == identity:
        value: T = kept[1]
        return value
    value = fetch()
    st.session_state[slot] = (identity, value)
    return value


def release(slot: str) -> None:
    st.session_state.pop(slot, None)


def draft_key(item_id: str) -> str:
    return draft_prefix(reviewer()) + item_id


def forget_draft(item_id: str) -> None:
    st.session_state.setdefault("draft_forget", []).append(draft_key(item_id))


def run_action(item: dict[str, Any], action: str, *, reason: str | None = None,
               messages: list[dict[str, Any]] | None = None) -> bool:
    """Send one review action. Its outcome is flashed on the next run; True when it was
    recorded by this call. Only a submit that went out and was not refused blocks a second
    one for the same (item, revision); a refusal (409, `claimed`, bad input) leaves nothing
    behind, so trying again sends again. A conflict is kept in `CONFLICT` for the page."""
    if not session_valid():  # signed out elsewhere or expired: the page's run ends it
        return False
    once = f"{item['id']}@{item['revision']}"
    acted: dict[str, str] = st.session_state.setdefault(ACTED, {})
    if once in acted:
        # a second delivery of a submit that is in flight or was recorded: the first one is
        # what counts, and it has already moved the page on (so this one does not)
        return False
    acted[once] = action
    try:
        result = client().review(item["id"], action, reviewer=reviewer(),
                                 expected_revision=item["revision"], reason=reason or None,
                                 messages=messages)
    except Conflict as exc:
        del acted[once]  # refused, nothing recorded: a re-apply must be sent again
        st.session_state[CONFLICT] = {
            "id": item["id"], "action": action, "reason": reason, "messages": messages,
            "message": exc.message, "code": exc.code, "seen_revision": item["revision"]}
        return False
    except TuneloopError as exc:
        del acted[once]  # refused: the reviewer may correct it and try again
        flash("error", f"Not saved: {exc.message}")
        return False
    forget_draft(item["id"])
    st.session_state["last_action"] = {"id": item["id"], "revision": result["revision"],
                                       "action": action}
    keep_work()
    flash("success", f"{action.replace('_', ' ')} saved (revision {result['revision']}). "
          "Undo with U.")
    return True


def undo_last() -> None:
    if not session_valid():  # signed out elsewhere or expired: the page's run ends it
        return
    last = st.session_state.get("last_action")
    if not last:
        flash("warning", "Nothing to undo in this session.")
        return
    try:
        result = client().undo(last["id"], reviewer=reviewer(),
                               expected_revision=last["revision"])
    except TuneloopError as exc:
        flash("error", f"Undo failed: {exc.message}")
        return
    st.session_state.pop("last_action", None)
    keep_work()
    st.session_state["undone_item"] = last["id"]
    flash("success", f"Undone: the item is {result['review']} again "
          f"(revision {result['revision']}).")


def undo_button() -> bool:
    """Undo this session's last action (shown while there is one). True when clicked."""
    slot = st.empty()  # there when empty too (see show_flash)
    last = st.session_state.get("last_action")
    if not last:
        return False
    label = f"Undo: {last['action'].replace('_', ' ')}"
    if slot.button(label, key="undo-last", shortcut="U", icon=":material/undo:"):
        undo_last()
        return True
    return False


def untrainable_banner(item: dict[str, Any]) -> None:
    """A visible mark on an item that can't be approved as it is, with the way out."""
    if item.get("trainable", True):
        return
    why = str(item.get("untrainable_message") or item.get("untrainable_reason")
              or "this item has no final answer")
    st.error(escape_markdown(f"Can't be approved as it is: {why}. Write the answer below and "
                             "save it (Ctrl+Enter), or reject it (X)."),
             icon=":material/block:")


def _act(item: dict[str, Any], action: str, scope: str, on_done: Callable[[], None],
         *, reason_key: str | None = None, answer_key: str | None = None,
         raw_key: str | None = None) -> None:
    """A widget callback: it runs before the script does, so the rerun that follows the key
    press already shows the outcome (and, on the Queue, the next item). One run per action,
    no `st.rerun()`. A missing reason, an empty answer or invalid JSON is said in place; a
    conflict keeps the reviewer on the item (`on_done` is not called)."""
    reason = str(st.session_state.get(reason_key) or "").strip() if reason_key else ""
    messages = item.get("messages") or []
    edited: list[dict[str, Any]] | None = None
    if action == "reject" and not reason:
        # the focus stays out of the box, so 1-9 pick a canned reason (and don't type digits)
        st.session_state[f"{scope}-problem"] = NO_REASON
        return
    editor = answer_key or raw_key
    if editor is not None and st.session_state.get(EDITING, {}).get(editor) != _shown(item):
        # the text would not be an edit of this item's answer: nothing is sent
        st.session_state[f"{scope}-problem"] = "The editor was not showing this item; reload."
        return
    if answer_key is not None:
        answer = str(st.session_state.get(answer_key) or "")
        if not answer.strip():
            st.session_state[f"{scope}-problem"] = "The answer is empty."
            return
        edited = with_answer(messages, answer)
    if raw_key is not None:
        try:
            edited = json.loads(str(st.session_state.get(raw_key) or ""))
        except ValueError as exc:
            st.session_state[f"{scope}-problem"] = f"That is not valid JSON: {exc}"
            return
    if run_action(item, action, reason=reason or None, messages=edited):
        on_done()


def _shown(item: dict[str, Any]) -> str:
    return f"{item['id']}@{item['revision']}"


def _set_reason(key: str, text: str, token: str) -> None:
    st.session_state[key] = text
    st.session_state.setdefault(CANNED, {})[key] = text  # the box's default (see _editors)
    st.session_state["focus_reason"] = token


def action_panel(item: dict[str, Any], *, key: str, on_done: Callable[[], None]) -> None:
    """Buttons and editors for one item. The actions run in widget callbacks, before the
    rerun the click causes, then call `on_done` (the page lets go of the item it holds): that
    rerun already shows the outcome and the item as it is now, or the next one."""
    scope = f"{key}-{item['id']}-{item['revision']}"
    trainable = bool(item.get("trainable", True))
    problem = st.session_state.pop(f"{scope}-problem", None)
    untrainable_banner(item)
    st.button("Approve" if trainable else "Approve (needs an answer first)",
              key=f"{scope}-approve", type="primary", shortcut="A", width="stretch",
              disabled=not trainable, on_click=_act, args=(item, "approve", scope, on_done))
    reason_key = f"{scope}-reason"
    with st.form(f"{scope}-judge", border=False, enter_to_submit=True):
        st.text_input(REASON_LABEL, value=st.session_state.get(CANNED, {}).get(reason_key, ""),
                      key=reason_key, max_chars=2000)
        if problem == NO_REASON:
            st.error(problem)  # right under the box it is about
        reject, needs_work = st.columns(2)
        reject.form_submit_button("Reject with reason", shortcut="X", width="stretch",
                                  on_click=_act, args=(item, "reject", scope, on_done),
                                  kwargs={"reason_key": reason_key})
        needs_work.form_submit_button("Needs work", shortcut="N", width="stretch",
                                      on_click=_act, args=(item, "needs_work", scope, on_done),
                                      kwargs={"reason_key": reason_key})
    _canned_reasons(reason_key, scope)
    token = st.session_state.pop("focus_reason", None)
    if token:
        focus(REASON_LABEL, token)
    if item.get("too_big"):
        too_big_notice(item)
        return
    _editors(item, scope, on_done, problem)


def too_big_notice(item: dict[str, Any]) -> None:
    """An item the server answered as a preview (past its `item_full_max_chars`): no editor,
    since an edit would start from cut text; the stored row is whole."""
    chars = sum((item.get("stored_chars") or {}).values())
    st.warning(f"This item is too big to show whole or to edit in the app ({chars:,} "
               "characters logged): its texts are cut here (…). Approve, reject and needs "
               "work act on it as logged. Read it whole with `tuneloop sql \"SELECT request, "
               f"response FROM interactions WHERE id = '{item['id']}'\"`.")


def _canned_reasons(reason_key: str, scope: str) -> None:
    reasons = ui_settings().ui_reject_reasons[:9]
    if not reasons:
        return
    # whole labels, wrapping as a compact list (no shortcut hint: the number leads the label)
    with st.container(horizontal=True, gap="small", key=f"{scope}-canned-reasons"):
        for number, text in enumerate(reasons, start=1):
            st.button(f"{number} {text}", key=f"{scope}-canned-{number}", shortcut=str(number),
                      on_click=_set_reason, args=(reason_key, text, f"{scope}-{number}"),
                      width="content", type="tertiary")


def _editors(item: dict[str, Any], scope: str, on_done: Callable[[], None],
             problem: str | None) -> None:
    messages = item.get("messages") or item.get("current") or []
    answer_key = f"{scope}-answer"
    original = last_answer(messages)
    restored = _restore_draft(item, answer_key, original)
    # the editor's own default is this item's answer, or the draft restored into it (not only
    # a value put in the session state): that value reaches the browser once, with the run
    # that put it there, and a run cut short by a second key press or a rerun request sends
    # the widget again without it; the browser then showed the widget's default, an empty
    # editor (UIREVIEW_11 #2) or the answer without the restored draft
    default = st.session_state.get(RESTORED, {}).get(answer_key, original)
    st.session_state.setdefault(EDITING, {})[answer_key] = _shown(item)
    alternatives = [str(a["content"]) for a in item.get("alternatives") or []
                    if isinstance(a, dict) and isinstance(a.get("content"), str)]
    if alternatives:
        with st.expander(f"{len(alternatives)} other answers the model gave (n > 1)"):
            for number, text in enumerate(alternatives, start=1):
                st.caption(f"answer {number}")
                show_text(text)
                st.button(f"Use answer {number}", key=f"{scope}-alt-{number}",
                          on_click=_set_state, args=(answer_key, text))
    if restored:
        st.info("Your unsaved answer for this item was restored from this browser.")
    with st.form(f"{scope}-edit", border=True):
        st.caption("Edit the assistant's answer, then save it as approved (Ctrl+Enter).")
        st.text_area("Answer", value=default, key=answer_key, height=190,
                     label_visibility="collapsed")
        save, preview = st.columns([1, 1])
        # no shortcut on Save: Ctrl+Enter in the text area submits the form (through its first
        # button) by itself, and a button shortcut on top of it sent every save twice
        save.form_submit_button("Save edit and approve", on_click=_act,
                                args=(item, "edit", scope, on_done),
                                kwargs={"answer_key": answer_key})
        # submits nothing to the API: the rerun shows the word diff of the edit below
        preview.form_submit_button("Show my changes")
        if problem in ("The answer is empty.", "The editor was not showing this item; reload."):
            st.error(problem)
    show_answer_diff(original, str(st.session_state.get(answer_key) or ""))
    raw_key = f"{scope}-raw"
    st.session_state[EDITING][raw_key] = _shown(item)
    with st.expander("Edit the whole message list (JSON)"), \
            st.form(f"{scope}-edit-all", border=False):
        st.text_area("Message list", value=json.dumps(messages, indent=2, ensure_ascii=False),
                     key=raw_key, height=320, label_visibility="collapsed")
        st.form_submit_button("Save list and approve", on_click=_act,
                              args=(item, "edit", scope, on_done), kwargs={"raw_key": raw_key})
        if problem is not None and problem.startswith("That is not valid JSON"):
            st.error(problem)


def _restore_draft(item: dict[str, Any], answer_key: str, original: str) -> bool:
    """Mount the draft keeper; put a draft this browser kept for the item into the editor
    (once). True when it did on this run."""
    key = draft_key(item["id"])
    forget = st.session_state.pop("draft_forget", None)
    state = browser("tuneloop-draft", draft={"key": key, "label": "Answer",
                                             "original": original, "ask": True,
                                             "prefix": DRAFT_PREFIX,
                                             "max_age_ms": DRAFT_MAX_AGE_S * 1000},
                    draft_forget=forget or None)
    draft = getattr(state, "draft", None) if state is not None else None
    applied: set[str] = st.session_state.setdefault("drafts_applied", set())
    if isinstance(draft, dict) and draft.get("key") == key and key not in applied \
            and isinstance(draft.get("text"), str):
        applied.add(key)
        st.session_state[answer_key] = draft["text"]
        st.session_state.setdefault(RESTORED, {})[answer_key] = draft["text"]
        return True
    return False


def _set_state(key: str, value: str) -> None:
    st.session_state[key] = value
