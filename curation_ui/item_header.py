"""The facts about an interaction shown above its conversation (as text, never Markdown)."""

from __future__ import annotations

from typing import Any

import streamlit as st


def show_header(item: dict[str, Any]) -> None:
    columns = st.columns(4)
    columns[0].caption("model")
    columns[0].text(str(item.get("model") or "—"))
    columns[1].caption("logged")
    columns[1].text(str(item.get("created_at") or "")[:19].replace("T", " "))
    columns[2].caption("review")
    columns[2].text(f"{item.get('review')} · revision {item.get('revision')}")
    columns[3].caption("app feedback")
    score = item.get("score")
    columns[3].text("—" if score is None else f"{score:+.2f} ({item.get('feedback_count')})")
    st.caption("tags")
    st.text(", ".join(item.get("tags") or []) or "—")
    if item.get("error"):
        st.caption("error")
        st.text(str(item["error"]))
    st.caption("id")
    st.text(str(item["id"]))
