"""The Routes page's list of frozen prompt templates (`tuneloop templates --freeze`): what a
fine-tuned model can leave out of its prompts, with the share of traffic it matched when it was
frozen and the tokens it holds."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from curation_ui.chat_view import escape_markdown
from tuneloop.client import AdminClient
from tuneloop.errors import TuneloopError

COLUMNS = ["template", "alias", "share %", "tokens", "parts", "frozen at", "by"]


def parts_summary(parts: dict[str, Any]) -> str:
    found = []
    if parts.get("system_prompt"):
        found.append(f"system prompt ({len(parts['system_prompt'])} chars)")
    if parts.get("few_shot"):
        found.append(f"{len(parts['few_shot'])} few-shot turns")
    for key, label in (("user_prefix", "user prefix"), ("user_suffix", "user suffix"),
                       ("prompt_prefix", "prompt prefix"), ("prompt_suffix", "prompt suffix")):
        if parts.get(key):
            found.append(label)
    return ", ".join(found)


def templates_table(items: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"template": t["ref"], "alias": t.get("alias") or "",
             "share %": None if t.get("share") is None else round(100 * t["share"], 1),
             "tokens": t.get("tokens"), "parts": parts_summary(t["parts"]),
             "frozen at": t["created_at"], "by": t.get("created_by") or ""} for t in items]
    return pd.DataFrame(rows, columns=COLUMNS)


def frozen_templates(api: AdminClient, alias: str) -> None:
    st.subheader("Prompt templates")
    try:
        items = api.templates()
    except TuneloopError as exc:
        st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
        return
    if not items:
        st.caption(escape_markdown(f"None frozen yet: `tuneloop templates --alias {alias}` "
                                   "finds them in traffic, `--freeze NAME --candidate ID` "
                                   "stores one."))
        return
    st.dataframe(templates_table(items), hide_index=True, width="stretch")
