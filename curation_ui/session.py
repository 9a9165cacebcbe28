"""Settings, sign-in and the admin client of the review app.

The app runs in its own Streamlit process, started by `tuneloop ui`, which passes the settings
down as `TUNELOOP_*` environment variables (and `--config FILE` after `--` when one was given):
`TUNELOOP_API` (the proxy's admin API), `TUNELOOP_REVIEWER_TOKEN` (held here, server-side,
never sent to the browser) and `TUNELOOP_UI_PASSWORD`. Reviewers sign in with their name and
that password, or through OIDC (`st.login`) when `[auth]` is configured in Streamlit secrets.
A password sign-in is kept across browser reloads by a signed, expiring cookie
(`signin_cookie.py`); signing out clears it and makes the server refuse it from then on.
Signed out, the app offers the sign-in page alone (at every page's address, so a deep link
like /item?id=X lands on the item after the sign-in), and every page calls `require_reviewer()`
first. The sign-in is checked again on every run and before every action (signature, expiry,
sign-out list): signing out in one tab, or the session expiring, ends the others too.
Password guessing is limited per name and overall (`signin_limit.py`). The app talks to the
admin API only; it never opens the DuckDB file.
"""

from __future__ import annotations

import argparse
import hmac
import math
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import streamlit as st

from curation_ui.browser import clear_drafts, set_cookie
from curation_ui.signin_cookie import COOKIE_NAME, CookieSigner, load_or_create_secret
from curation_ui.signin_limit import SignInLimiter
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


@st.cache_resource
def signin_limiter() -> SignInLimiter:
    """One for the server process: every session's failed sign-ins count together."""
    return SignInLimiter()


@st.cache_resource
def _signer(secret: str | None, secret_file: str, signouts_file: str) -> CookieSigner:
    key = secret.encode() if secret else load_or_create_secret(Path(secret_file))
    return CookieSigner(key, Path(signouts_file))


def signer(settings: Settings) -> CookieSigner:
    secret = settings.ui_cookie_secret.get_secret_value() if settings.ui_cookie_secret else None
    return _signer(secret or None, str(settings.ui_secret_file), str(settings.ui_signouts_file))


def _cookie() -> str:
    try:
        return unquote(st.context.cookies.get(COOKIE_NAME) or "")
    except Exception:  # no browser context (AppTest)
        return ""


def signed_in() -> bool:
    return bool(st.session_state.get("reviewer"))


def session_valid() -> bool:
    """The session's sign-in still holds: for a password sign-in its cookie's signature,
    expiry and absence from the sign-out list (checked again each time: another tab may have
    signed out, or the time run out); for OIDC, Streamlit's login."""
    if not signed_in():
        return False
    if _oidc_configured():
        return bool(st.user.is_logged_in)
    cookie = st.session_state.get("session_cookie")
    if not isinstance(cookie, str) or not cookie:
        return False
    return signer(ui_settings()).decode(cookie, now=int(time.time())) is not None


def end_session(message: str) -> None:
    """Forget the session's sign-in (its cookie is refused already) and say why on the
    sign-in page."""
    cookie = st.session_state.get("session_cookie")
    refused = list(st.session_state.get("signed_out_cookies") or [])
    if isinstance(cookie, str) and cookie:
        refused.append(cookie)
    for name in list(st.session_state.keys()):
        del st.session_state[name]
    st.session_state["signed_out_cookies"] = refused
    st.session_state["signin_notice"] = message
    st.session_state["clear_cookie"] = secrets.token_hex(8)


ENDED = "Your sign-in has ended (signed out in another tab, or expired). Sign in again."


def require_reviewer() -> None:
    """Every page (and every fragment) calls this first: without a signed-in reviewer whose
    sign-in still holds it draws nothing; an ended sign-in goes back to the sign-in page."""
    if signed_in() and not session_valid():
        end_session(ENDED)
        st.rerun(scope="app")
    if not signed_in():
        st.stop()


def restore(settings: Settings) -> bool:
    """Sign the session in from a valid sign-in cookie (or OIDC); True when signed in."""
    if signed_in():
        if session_valid():
            return True
        end_session(ENDED)
    if _oidc_configured():
        if st.user.is_logged_in:
            identity = st.user.get("email") or st.user.get("name") or st.user.get("sub")
            st.session_state["reviewer"] = str(identity)[:MAX_NAME]
            return True
        return False
    cookie = _cookie()
    if cookie and cookie not in st.session_state.get("signed_out_cookies", ()):
        found = signer(settings).decode(cookie, now=int(time.time()))
        if found is not None:
            st.session_state["reviewer"] = found.reviewer[:MAX_NAME]
            st.session_state["session_cookie"] = cookie
            return True
    return False


def sign_in_page() -> None:
    """The only page a signed-out visitor gets: the sign-in form."""
    settings = ui_settings()
    st.title("tuneloop review")
    if _oidc_configured():
        st.button("Sign in", on_click=st.login, type="primary")
        return
    if settings.ui_password is None or not settings.ui_password.get_secret_value():
        st.error("No UI password is set: start the app with TUNELOOP_UI_PASSWORD, or configure "
                 "OIDC ([auth] in .streamlit/secrets.toml).")
        return
    pending = st.session_state.pop("clear_cookie", None)
    if pending:
        set_cookie(COOKIE_NAME, "", 0, pending)
    gone = st.session_state.pop("clear_drafts", None)
    if gone:  # signed out: the drafts (customer text) leave this browser too
        clear_drafts(gone[0], gone[1])
    notice = st.session_state.pop("signin_notice", None)
    if notice:
        st.warning(notice)
    with st.form("sign_in"):
        name = st.text_input("Your name (recorded with every review)", max_chars=MAX_NAME)
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    expected = settings.ui_password.get_secret_value().encode()  # checked non-empty above
    if not name.strip():
        st.error("Enter your name: it is recorded with every review.")
        return
    limits = signin_limiter()
    wait = limits.wait_s(name.strip(), time.monotonic())
    if wait > 0:  # the password is not checked while locked: a guess tells nothing
        st.error(f"Too many failed sign-ins: try again in {math.ceil(wait)} s.")
        return
    if not hmac.compare_digest(password.encode(), expected):
        locked_s = limits.failed(name.strip(), time.monotonic())
        time.sleep(1.0)  # slows password guessing in this session too
        st.error("Wrong password." + (f" Too many failed sign-ins: try again in "
                                      f"{math.ceil(locked_s)} s." if locked_s else ""))
        return
    limits.succeeded(name.strip())
    ttl = int(settings.ui_session_hours * 3600)
    cookie = signer(settings).issue(name.strip(), now=int(time.time()), ttl_s=ttl)
    st.session_state["reviewer"] = name.strip()
    st.session_state["session_cookie"] = cookie
    st.session_state["set_cookie"] = (cookie, ttl)
    st.rerun()


def write_cookie() -> None:
    """After a password sign-in: hand the signed cookie to the browser (once)."""
    pending = st.session_state.pop("set_cookie", None)
    if pending:
        cookie, ttl = pending
        set_cookie(COOKIE_NAME, cookie, ttl, cookie[-16:])


def sign_out() -> None:
    """End the session: the cookie is refused from now on and cleared in the browser, and so
    are the reviewer's drafts."""
    who = st.session_state.get("reviewer")
    cookie = st.session_state.pop("session_cookie", None) or _cookie()
    if cookie:
        signer(ui_settings()).sign_out(cookie, now=int(time.time()))
        st.session_state.setdefault("signed_out_cookies", []).append(cookie)
    for name in list(st.session_state.keys()):
        if name != "signed_out_cookies":
            del st.session_state[name]
    st.session_state["clear_cookie"] = secrets.token_hex(8)
    if who:
        st.session_state["clear_drafts"] = (str(who), secrets.token_hex(8))
    if _oidc_configured() and st.user.is_logged_in:
        st.logout()
