"""The review app's sign-in: the signed cookie (forged, expired, signed out: refused; secret
file 0600), and every page stops at its top without a signed-in reviewer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from curation_ui.signin_cookie import CookieSigner, load_or_create_secret
from tests.conftest import REVIEWER_TOKEN, ProxyServer
from tests.test_review_api import logged

ROOT = Path(__file__).resolve().parent.parent
VIEWS = sorted((ROOT / "curation_ui" / "views").glob("*.py"))
NOW = 1_800_000_000


def signer(tmp_path: Path) -> CookieSigner:
    return CookieSigner(load_or_create_secret(tmp_path / "ui-secret"), tmp_path / "signouts")


def test_a_cookie_names_its_reviewer_until_it_expires(tmp_path: Path) -> None:
    keys = signer(tmp_path)
    cookie = keys.issue("ann", now=NOW, ttl_s=3600)
    found = keys.decode(cookie, now=NOW + 10)
    assert found is not None and found.reviewer == "ann"
    assert keys.decode(cookie, now=NOW + 3600) is None
    assert stat.S_IMODE((tmp_path / "ui-secret").stat().st_mode) == 0o600
    assert signer(tmp_path).decode(cookie, now=NOW) is not None  # the same secret next time


@pytest.mark.parametrize("tamper", [
    lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # signature
    lambda c: "eyJyIjoibWFsbG9yeSIsImkiOiJ4IiwiZSI6OTk5OTk5OTk5OTl9." + c.split(".")[1],
    lambda c: c.replace(".", ""),
    lambda c: "",
    lambda c: c + "." + c,
])
def test_a_forged_cookie_is_refused(tmp_path: Path, tamper: object) -> None:
    keys = signer(tmp_path)
    cookie = keys.issue("ann", now=NOW, ttl_s=3600)
    assert callable(tamper)
    assert keys.decode(tamper(cookie), now=NOW) is None


def test_another_secret_refuses_the_cookie(tmp_path: Path) -> None:
    cookie = signer(tmp_path).issue("ann", now=NOW, ttl_s=3600)
    other = CookieSigner(b"another secret of enough bytes!!", tmp_path / "signouts")
    assert other.decode(cookie, now=NOW) is None


def test_a_signed_out_cookie_is_refused_even_after_a_restart(tmp_path: Path) -> None:
    keys = signer(tmp_path)
    cookie = keys.issue("ann", now=NOW, ttl_s=3600)
    other = keys.issue("ann", now=NOW, ttl_s=3600)
    keys.sign_out(cookie, now=NOW + 1)
    assert keys.decode(cookie, now=NOW + 2) is None
    assert signer(tmp_path).decode(cookie, now=NOW + 2) is None
    assert keys.decode(other, now=NOW + 2) is not None  # another browser stays signed in
    assert stat.S_IMODE((tmp_path / "signouts").stat().st_mode) == 0o600
    later = keys.issue("ann", now=NOW + 4000, ttl_s=3600)
    keys.sign_out(later, now=NOW + 4000)  # expired entries are pruned from the list
    assert len((tmp_path / "signouts").read_text().split(",")) == 1


@pytest.mark.parametrize("view", VIEWS, ids=[v.stem for v in VIEWS])
def test_every_page_stops_at_its_top_when_signed_out(view: Path, proxy: ProxyServer,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    (item_id,) = logged(proxy, "a logged prompt")
    monkeypatch.setenv("TUNELOOP_API", proxy.url)
    monkeypatch.setenv("TUNELOOP_REVIEWER_TOKEN", REVIEWER_TOKEN)
    monkeypatch.setenv("TUNELOOP_UI_PASSWORD", "pw")
    monkeypatch.setenv("TUNELOOP_DB", str(tmp_path / "ui.duckdb"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(view), default_timeout=30)
    at.session_state["item_id"] = item_id
    at.query_params["id"] = item_id
    at.run()
    assert not at.exception
    assert len(at.main.children) == 0 and len(at.sidebar.children) == 0
    st.cache_resource.clear()


def test_no_page_folder_is_served_by_streamlit_itself() -> None:
    assert not (ROOT / "curation_ui" / "pages").exists()
