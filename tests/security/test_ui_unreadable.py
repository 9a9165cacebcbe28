"""One stored row the admin API can't write as JSON comes back as a placeholder
(`{"id", "error"}`); the review app must show that row as unreadable and keep every page
working for everyone (Browse, Queue and Item all read fields a placeholder lacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REVIEWER_TOKEN, FakeUpstream, ProxyServer, proxy_settings
from tests.security.test_admin_bodies import client, edit, logged, nest, restartable
from tests.test_ui_app import APP, PASSWORD

__all__ = ["restartable"]  # the fixture, used by name


def open_app(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TUNELOOP_API", url)
    monkeypatch.setenv("TUNELOOP_DB", str(tmp_path / "ui" / "tuneloop.duckdb"))
    monkeypatch.setenv("TUNELOOP_REVIEWER_TOKEN", REVIEWER_TOKEN)
    monkeypatch.setenv("TUNELOOP_UI_PASSWORD", PASSWORD)
    monkeypatch.delenv("TUNELOOP_ADMIN_TOKEN", raising=False)
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input("ann")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    return at


def test_an_unreadable_row_leaves_every_page_working(
        restartable: Any, fake_openai: FakeUpstream, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with restartable() as url:
        proxy = ProxyServer(url, proxy_settings(Path(restartable.db).parent,
                                                fake_openai.base_url), fake_openai)
        bad, _good = logged(proxy, "bad one", "good one")
        assert edit(client(proxy), bad, {"role": "assistant", "content": "x"}).status_code == 200
        proxy.close()
    too_deep = json.dumps([{"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a", "x": nest(300)}])
    with duckdb.connect(str(restartable.db)) as con:  # stored before the checks existed
        con.execute("UPDATE reviews SET messages = ? "
                    "WHERE interaction_id = ?", [too_deep, bad])
    try:
        with restartable() as url:
            at = open_app(url, tmp_path, monkeypatch)
            assert not at.exception, at.exception
            at.switch_page("views/browse.py").run()
            assert not at.exception, at.exception
            assert any(bad in w.value for w in at.warning)
            at.session_state["item_id"] = bad
            at.switch_page("views/item.py").run()
            assert not at.exception, at.exception
            shown = [e.value.replace("\\", "") for e in at.error]  # markdown escapes
            assert any(bad in text and "can't be shown" in text for text in shown), shown
    finally:
        st.cache_resource.clear()
