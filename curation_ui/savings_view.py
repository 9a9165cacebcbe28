"""The Routes page's savings section: an alias's cost per request per target and day (a line
chart), what the other targets saved per day against the baseline (a bar chart), and the
per-target figures with break-even (GET /admin/routes/{alias}/savings)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from curation_ui.chat_view import escape_markdown

COLUMNS = ["target", "role", "requests", "prompt tok/req", "completion tok/req", "cost/req $",
           "saved/req $", "saved/day $", "break-even"]


def savings_frame(report: dict[str, Any]) -> pd.DataFrame:
    rows = [{"target": t["target"], "role": t["role"], "requests": t["requests"],
             "prompt tok/req": t["prompt_tokens_per_request"],
             "completion tok/req": t["completion_tokens_per_request"],
             "cost/req $": t["cost_per_request_usd"],
             "saved/req $": t.get("saved_usd_per_request"),
             "saved/day $": t.get("saved_usd_per_day"),
             "break-even": t.get("break_even") or ("" if t["role"] == "baseline"
                                                   else t.get("note") or "")}
            for t in report["targets"]]
    return pd.DataFrame(rows, columns=COLUMNS)


def daily_frame(report: dict[str, Any], value: str) -> pd.DataFrame:
    """Rows of (day, target, USD) for one daily figure (cost_per_request_usd or saved_usd),
    long form: target names hold colons, which a chart would read as column types. Rows
    without a value (no price; the baseline's saving) are left out."""
    rows = [{"day": r["day"], "target": r["target"], "USD": r[value]}
            for r in report["daily"] if r.get(value) is not None]
    return pd.DataFrame(rows, columns=["day", "target", "USD"]).sort_values(["day", "target"])


def show_savings(report: dict[str, Any]) -> None:
    st.subheader("Savings")
    st.caption(escape_markdown(f"Production traffic of the last {report['days']} days; "
                               f"baseline {report['baseline'] or 'none'}. Saved per day: per "
                               "day the target served (first to last request, at least "
                               "one day)."))
    if report["message"]:
        st.info(escape_markdown(report["message"]))
    if not report["targets"]:
        return
    st.dataframe(savings_frame(report), hide_index=True, width="stretch")
    cost = daily_frame(report, "cost_per_request_usd")
    saved = daily_frame(report, "saved_usd")
    left, right = st.columns(2)
    with left:
        st.caption("Cost per request (USD) by day")
        if cost.empty:
            st.text("no price known for these targets")
        else:
            st.line_chart(cost, x="day", y="USD", color="target", y_label="USD per request")
    with right:
        st.caption("Saved against the baseline (USD) by day")
        if saved.empty:
            st.text("nothing to compare yet")
        else:
            st.bar_chart(saved, x="day", y="USD", color="target", y_label="USD saved",
                         stack=False)
