"""The review app: `tuneloop ui` runs `streamlit run` on this file.

Add a page with one line in PAGES (a file under pages/ that renders it).
"""

from __future__ import annotations

import streamlit as st

from curation_ui.session import sign_in, sign_out, ui_settings

PAGES = [
    st.Page("pages/queue.py", title="Queue", icon=":material/inbox:", default=True),
    st.Page("pages/browse.py", title="Browse", icon=":material/table_rows:"),
    st.Page("pages/item.py", title="Item", icon=":material/forum:"),
    st.Page("pages/stats.py", title="Stats", icon=":material/bar_chart:"),
    st.Page("pages/datasets.py", title="Datasets", icon=":material/dataset:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/model_training:"),
    st.Page("pages/routes.py", title="Routes", icon=":material/alt_route:"),
]

st.set_page_config(page_title="tuneloop review", page_icon=":material/rate_review:",
                   layout="wide")
if sign_in(ui_settings()):
    with st.sidebar:
        st.caption("signed in as")
        st.text(st.session_state["reviewer"])
        if st.button("Sign out"):
            sign_out()
            st.rerun()
    st.navigation(PAGES).run()
