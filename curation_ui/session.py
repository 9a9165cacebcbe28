"""Settings, sign-in and the admin client of the review app.

The app runs in its own Streamlit process, started by `tuneloop ui`, which passes the settings
down as `TUNELOOP_*` environment variables (and `--config FILE` after `--` when one was given):
`TUNELOOP_API` (the proxy's admin API), `TUNELOOP_REVIEWER_TOKEN` (held here, server-side,
never sent to the browser) and `TUNELOOP_UI_PASSWORD`. Reviewers sign in with their name and
that password, or through OIDC (`st.login`) when `[auth]` is configured in Streamlit secrets.
The app talks to the admin API only; it never opens the DuckDB file.
"""

from __future__ import annotations

import argparse
import hmac
import sys
import time
from pathlib import Path

import streamlit as st

from tuneloop.client import AdminClient
from tuneloop.config import Settings, load_settings

MAX_NAME = 128


@st.cache_resource
def _settings(config_file: str | None) -> Settings:
    return load_settings(Path(config_file) if config_file else None)


def ui_settings() -> Settings:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:])
    return _settings(known.config)


def api_token(settings: Settings) -> str | None:
    for secret in (settings.reviewer_token, settings.admin_token):
        if secret is not None and secret.get_secret_value():
            return secret.get_secret_value()
    return None


@st.cache_resource
def _client(api: str, token: str | None) -> AdminClient:
    return AdminClient(api, token, timeout_s=30.0, actor="tuneloop-ui")


def client() -> AdminClient:
    settings = ui_settings()
    return _client(settings.api, api_token(settings))


def reviewer() -> str:
    name: str = st.session_state["reviewer"]
    return name


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def sign_in(settings: Settings) -> bool:
    """True once the session belongs to a signed-in reviewer; else draws the sign-in form."""
    if st.session_state.get("reviewer"):
        return True
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("tuneloop review")
            st.button("Sign in", on_click=st.login, type="primary")
            return False
        identity = st.user.get("email") or st.user.get("name") or st.user.get("sub")
        st.session_state["reviewer"] = str(identity)[:MAX_NAME]
        return True
    st.title("tuneloop review")
    if settings.ui_password is None or not settings.ui_password.get_secret_value():
        st.error("No UI password is set: start the app with TUNELOOP_UI_PASSWORD, or configure "
                 "OIDC ([auth] in .streamlit/secrets.toml).")
        return False
    with st.form("sign_in"):
        name = st.text_input("Your name (recorded with every review)", max_chars=MAX_NAME)
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return False
    expected = settings.ui_password.get_secret_value().encode()  # checked non-empty above
    if not name.strip():
        st.error("Enter your name: it is recorded with every review.")
        return False
    if not hmac.compare_digest(password.encode(), expected):
        time.sleep(1.0)  # slows password guessing
        st.error("Wrong password.")
        return False
    st.session_state["reviewer"] = name.strip()
    st.rerun()
    return True  # not reached: st.rerun() restarts the script


def sign_out() -> None:
    st.session_state.pop("reviewer", None)
    if _oidc_configured() and st.user.is_logged_in:
        st.logout()
