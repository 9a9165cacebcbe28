"""What a reviewer's work needs beyond one browser tab: their skip list and their last action
(for undo). Kept in a file beside the database (mode 0600, `<db>.ui-reviewers`), keyed by the
reviewer's name, so a reload or a new sign-in finds them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from curation_ui.session import reviewer, ui_settings
from curation_ui.signin_cookie import locked, write_private

KEPT = ("queue_skipped", "last_action")
MAX_SKIPPED = 1000


def _path() -> Path:
    return ui_settings().local_file("ui-reviewers")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes() or b"{}")
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def restore_work() -> None:
    """Put the signed-in reviewer's kept skip list and last action into the session (once)."""
    if st.session_state.get("work_restored"):
        return
    st.session_state["work_restored"] = True
    kept = _read(_path()).get(reviewer())
    if not isinstance(kept, dict):
        return
    skipped = kept.get("queue_skipped")
    if isinstance(skipped, list) and "queue_skipped" not in st.session_state:
        st.session_state["queue_skipped"] = [str(i) for i in skipped][-MAX_SKIPPED:]
    last = kept.get("last_action")
    if isinstance(last, dict) and "last_action" not in st.session_state:
        st.session_state["last_action"] = last


def keep_work() -> None:
    """Write the session's skip list and last action for the reviewer (when they changed)."""
    value = {"queue_skipped": list(st.session_state.get("queue_skipped") or [])[-MAX_SKIPPED:],
             "last_action": st.session_state.get("last_action")}
    if st.session_state.get("work_kept") == value:
        return
    path = _path()
    with locked(path):
        data = _read(path)
        data[reviewer()] = value
        write_private(path, json.dumps(data).encode())
    st.session_state["work_kept"] = value
