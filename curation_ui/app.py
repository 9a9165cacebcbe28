"""The review app: `tuneloop ui` runs `streamlit run` on this file.

Add a page with one line in PAGES (a file under views/ that renders it and calls
`require_reviewer()` first). The folder is not named `pages/`: Streamlit would serve the files
of a `pages/` folder by itself, around the sign-in. `st.navigation` runs on every run, with the
sign-in page alone while nobody is signed in, so no other page can be reached by its URL.
"""

from __future__ import annotations

import streamlit as st

from curation_ui.reviewer_state import restore_work
from curation_ui.session import restore, sign_in_page, sign_out, ui_settings, write_cookie

QUEUE_PATH = "queue"  # the default page, served at "/" (Streamlit does not serve it here)
PAGES = [
    st.Page("views/queue.py", title="Queue", icon=":material/inbox:", url_path=QUEUE_PATH,
            default=True),
    st.Page("views/browse.py", title="Browse", icon=":material/table_rows:"),
    st.Page("views/item.py", title="Item", icon=":material/forum:"),
    st.Page("views/stats.py", title="Stats", icon=":material/bar_chart:"),
    st.Page("views/datasets.py", title="Datasets", icon=":material/dataset:"),
    st.Page("views/jobs.py", title="Jobs", icon=":material/model_training:"),
    st.Page("views/routes.py", title="Routes", icon=":material/alt_route:"),
]
# signed out, every page's address shows the sign-in form (not Streamlit's "page not found"),
# /queue and /signin too; after the sign-in the same address is that page, so a link like
# /item?id=X lands on its item. Streamlit reserves the default page's own path and never serves
# it, hence the sign-in at "/" has a path nobody asks for.
SIGN_IN = st.Page(sign_in_page, title="Sign in", icon=":material/login:",
                  url_path="signin-default", default=True)
SIGN_IN_AT = [SIGN_IN] + [st.Page(sign_in_page, title="Sign in", url_path=path) for path in
                          ["signin", QUEUE_PATH, *(page.url_path for page in PAGES)] if path]

st.set_page_config(page_title="tuneloop review", page_icon="📝",
                   layout="wide")
if restore(ui_settings()):
    write_cookie()
    restore_work()  # the reviewer's skip list and last action, across reloads
    with st.sidebar:
        st.caption("signed in as")
        st.text(st.session_state["reviewer"])
        if st.button("Sign out"):
            sign_out()
            st.rerun()
    st.navigation(PAGES).run()
else:
    st.navigation(SIGN_IN_AT, position="hidden").run()
