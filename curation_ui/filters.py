"""Filter widgets shared by the Queue and Browse pages; they map onto the admin API's list
parameters (`GET /admin/interactions`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import streamlit as st

from curation_ui.session import client
from tuneloop.errors import TuneloopError

REVIEW_STATES = ("pending", "approved", "rejected", "needs_work")
# items without a final answer (upstream errors, cut streams, empty answers) can't be trained
# on: the pending queue leaves them out unless asked (`trainable` of the admin API)
ANSWERLESS = {"left out of the pending queue": None, "only these": "false", "shown too": "any"}
# search matches the newest 500 interactions not yet indexed at query time, within 512 KB of
# text, rows of at most 64 KB (storage.search_tail); the others are missed until the indexer
# catches up. /healthz counts those (`search_tail_missed_rows`); a server without that
# figure: the lag over 500
LAG_SHOWN_ROWS = 500


def search_lag_rows() -> int:
    """Interactions not yet in the search index, as /metrics counts them, when search misses
    some of them (0 when it misses none, or unknown)."""
    try:
        health = client().request("GET", "/healthz")
    except TuneloopError:
        return 0
    if not isinstance(health, dict):
        return 0
    lag, missed = health.get("search_index_lag_rows"), health.get("search_tail_missed_rows")
    if not isinstance(lag, int):
        return 0
    if isinstance(missed, int):
        return lag if missed > 0 else 0
    return lag if lag > LAG_SHOWN_ROWS else 0


def _day_start(day: date | None) -> str | None:
    return None if day is None else datetime.combine(day, time(), UTC).isoformat()


def filter_widgets(scope: str, *, review: bool) -> dict[str, Any]:
    """Sidebar filters; returns the non-empty ones as API parameters."""
    params: dict[str, Any] = {}
    with st.sidebar:
        st.subheader("Filters")
        if review:
            state = st.selectbox("Review state", ("any", *REVIEW_STATES), key=f"{scope}-review")
            if state != "any":
                params["review"] = state
        params["q"] = st.text_input(
            "Search words", key=f"{scope}-q", max_chars=200,
            help="Items holding every word (`refu*`: a prefix). A very long message is "
                 "searchable by its first 5,000 distinct words only.").strip()
        lag = search_lag_rows()
        if lag:
            st.caption(f"Search is {lag:,} rows behind: the newest items are found, older "
                       "ones not indexed yet may be missing.")
        # the admin API's q_in: by default the system prompt (shared by many items) is left out
        searched = {"users and answers": None, "answers only": "answers",
                    "everything (with system prompts)": "all"}
        params["q_in"] = searched[st.selectbox("Search in", tuple(searched), key=f"{scope}-q-in")]
        params["model"] = st.text_input("Model", key=f"{scope}-model", max_chars=200).strip()
        params["tag"] = st.text_input("Tag", key=f"{scope}-tag", max_chars=64).strip()
        params["user"] = st.text_input("User", key=f"{scope}-user", max_chars=200).strip()
        errors = st.selectbox("Errors", ("any", "only errors", "no errors"),
                              key=f"{scope}-errors")
        if errors != "any":
            params["has_error"] = errors == "only errors"
        answerless = st.selectbox("Untrainable items", tuple(ANSWERLESS),
                                  key=f"{scope}-answerless",
                                  help="No final answer: upstream errors, cut streams, empty")
        params["trainable"] = ANSWERLESS[answerless]
        if st.checkbox("Only items with app feedback", key=f"{scope}-feedback"):
            params["min_score"] = st.slider("Minimum mean score", -1.0, 1.0, 0.0, 0.25,
                                            key=f"{scope}-score")
        since = st.date_input("Since", value=None, key=f"{scope}-since")
        until = st.date_input("Until (exclusive)", value=None, key=f"{scope}-until")
        params["since"] = _day_start(since if isinstance(since, date) else None)
        params["until"] = _day_start(until if isinstance(until, date) else None)
    return {k: v for k, v in params.items() if v not in ("", None)}


def list_failure(exc: TuneloopError) -> str:
    """What a failed list or queue call tells the reviewer: a search refused for its time
    budget is a query to narrow, not an outage."""
    if exc.code == "search_too_broad":
        return f"Search too broad: {exc.message}"
    return f"The admin API did not answer: {exc.message}"
