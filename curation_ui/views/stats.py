"""Stats: review progress as charts (states over time, by model and tag, token lengths,
reviewer throughput), from GET /admin/stats."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import pandas as pd
import streamlit as st

from curation_ui.chat_view import escape_markdown
from curation_ui.session import client, require_reviewer
from tuneloop.errors import TuneloopError

require_reviewer()

STATES = ["pending", "approved", "rejected", "needs_work"]
# grey, green, red, amber for pending, approved, rejected, needs work
COLORS: Any = ["#9e9e9e", "#2e7d32", "#c62828", "#f9a825"]

st.title("Stats")
since = st.sidebar.date_input("Since", value=None, key="stats-since")
since_param = (datetime.combine(since, time(), UTC).isoformat()
               if isinstance(since, date) else None)
try:
    stats = client().stats(since=since_param)
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()

totals = stats["totals"]
for column, state in zip(st.columns(5), [*STATES, "not_reviewable"], strict=True):
    column.metric(state.replace("_", " "), f"{totals.get(state, 0):,}")


def by_state(rows: list[dict[str, object]], key: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[key, *STATES])
    return frame.set_index(key)[STATES]


st.subheader("Review state by day logged")
if stats["by_day"]:
    st.bar_chart(by_state(stats["by_day"], "day"), color=COLORS, stack=True)
left, right = st.columns(2)
with left:
    st.subheader("By model")
    models = [m for m in stats["by_model"] if m["model"] is not None]
    # the server sums the models past its top ones in one row with `model` null
    others = [m for m in stats["by_model"] if m["model"] is None]
    if models:
        st.bar_chart(by_state(models, "model"), color=COLORS, stack=True, horizontal=True)
    for row in others:
        st.caption(f"Other models ({row['models']:,}): {row['total']:,} interactions, "
                   f"{row['pending']:,} pending")
with right:
    st.subheader("By tag")
    if stats["by_tag"]:
        st.bar_chart(by_state(stats["by_tag"], "tag"), color=COLORS, stack=True,
                     horizontal=True)
    else:
        st.caption("No tags yet.")
left, right = st.columns(2)
with left:
    st.subheader("Prompt + completion tokens")
    histogram = pd.DataFrame(stats["token_histogram"], columns=["low", "high", "count"])
    if not histogram.empty:
        histogram["tokens"] = [f"{lo:>7,}–{hi:,}" for lo, hi in
                               zip(histogram["low"], histogram["high"], strict=True)]
        st.bar_chart(histogram.set_index("tokens")["count"])
with right:
    st.subheader("Reviewer throughput (actions per day)")
    actions = pd.DataFrame(stats["reviewers"], columns=["reviewer", "day", "action", "count"])
    if actions.empty:
        st.caption("No review actions yet.")
    else:
        st.bar_chart(actions.pivot_table(index="day", columns="reviewer", values="count",
                                         aggfunc="sum", fill_value=0), stack=True)
feedback = stats["feedback"]
st.caption(f"App feedback: {feedback['count']:,} scores, mean "
           f"{feedback['mean_score'] if feedback['mean_score'] is not None else 0:+.2f}, "
           f"{feedback['positive']:,} positive, {feedback['negative']:,} negative")
