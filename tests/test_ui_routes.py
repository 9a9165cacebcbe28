"""The Routes page with Streamlit's AppTest against a real proxy: the alias map with canary
shares, health, history, and the rollback button (disabled unless the app has the admin
token)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer

APP = str(Path(__file__).resolve().parent.parent / "curation_ui" / "app.py")
PASSWORD = "correct horse battery staple"
FT = "ft:gpt-4o-mini-2024-07-18:acme::v1"


@pytest.fixture
def routes_page(proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                ) -> Iterator[Callable[..., AppTest]]:
    monkeypatch.setenv("TUNELOOP_API", proxy.url)
    monkeypatch.setenv("TUNELOOP_DB", str(tmp_path / "ui" / "tuneloop.duckdb"))
    monkeypatch.setenv("TUNELOOP_REVIEWER_TOKEN", REVIEWER_TOKEN)
    monkeypatch.setenv("TUNELOOP_UI_PASSWORD", PASSWORD)
    monkeypatch.delenv("TUNELOOP_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("TUNELOOP_UI_ADMIN_TOKEN", raising=False)
    proxy.admin().put_routes({"support-bot": {"targets": [{"model": "gpt-4o-mini"}]}})
    proxy.admin().promote("support-bot", FT, canary=10, stop="###")

    def open_page(*, ui_admin_token: str | None = None) -> AppTest:
        if ui_admin_token:
            monkeypatch.setenv("TUNELOOP_UI_ADMIN_TOKEN", ui_admin_token)
        st.cache_resource.clear()
        at = AppTest.from_file(APP, default_timeout=30).run()
        at.text_input[0].input("ann")
        at.text_input[1].input(PASSWORD)
        at.button[0].click().run()
        at.switch_page("views/routes.py").run()
        assert not at.exception, at.exception
        return at

    yield open_page
    st.cache_resource.clear()


def rollback(at: AppTest) -> object:
    return next(b for b in at.button if b.label == "Roll back support-bot")


def test_routes_page_shows_shares_health_and_history_read_only(
        routes_page: Callable[..., AppTest], proxy: ProxyServer) -> None:
    proxy.openai().chat.completions.create(model="support-bot",
                                           messages=[{"role": "user", "content": "hi"}])
    proxy.upstream.state.fail_containing["refuse me"] = 400  # every model refuses it
    with contextlib.suppress(openai.BadRequestError):
        proxy.openai().chat.completions.create(
            model="support-bot", messages=[{"role": "user", "content": "refuse me"}])
    proxy.wait_logged(2)
    at = routes_page()
    table = at.dataframe[0].value
    assert list(table["alias"]) == ["support-bot"]
    assert table["targets"][0] == f"gpt-4o-mini 90%, {FT} 10%"
    assert table["transforms"][0] == f"{FT}: stop"  # the candidate's only
    health = at.dataframe[1].value
    assert health["requests"].sum() == 1 and set(health["role"]) == {"target"}
    assert health["not judged"].sum() == 1  # not judged
    history = at.dataframe[2].value
    assert list(history["action"]) == ["promote", "replace"]
    button = rollback(at)
    assert button.disabled  # type: ignore[attr-defined]
    assert any("TUNELOOP_UI_ADMIN_TOKEN" in c.value.replace("\\", "") for c in at.caption)


def test_rollback_button_with_the_admin_token(routes_page: Callable[..., AppTest],
                                              proxy: ProxyServer) -> None:
    at = routes_page(ui_admin_token=ADMIN_TOKEN)
    button = rollback(at)
    assert not button.disabled  # type: ignore[attr-defined]
    button.click().run()  # type: ignore[attr-defined]
    assert not at.exception
    assert any("Rolled back" in s.value for s in at.success)
    assert proxy.admin().routes()["support-bot"]["targets"] == [
        {"model": "gpt-4o-mini", "provider": "openai", "weight": 100.0}]
    assert at.dataframe[0].value["targets"][0] == "gpt-4o-mini 100%"
    assert proxy.admin().route_history("support-bot")[0]["changed_by"] == "ui:ann"
    rollback(at).click().run()  # type: ignore[attr-defined]
    assert any("Rollback refused" in e.value for e in at.error)


def test_routes_page_lists_the_frozen_prompt_templates(routes_page: Callable[..., AppTest],
                                                       proxy: ProxyServer) -> None:
    at = routes_page()
    assert any("None frozen yet" in c.value for c in at.caption)
    admin = proxy.admin()
    parts = {"system_prompt": "You are Acme's bot.",
             "few_shot": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}],
             "user_suffix": "\nAnswer briefly."}
    made = admin.freeze_template("support-bot", parts, alias="support-bot")
    admin.freeze_template("support-bot", {"system_prompt": "Short."}, alias="support-bot")
    at = routes_page()
    table = next(d.value for d in at.dataframe if "template" in d.value.columns)
    assert list(table["template"]) == ["support-bot-v2", "support-bot-v1"]
    first = table[table["template"] == "support-bot-v1"].iloc[0]
    assert first["tokens"] == made["tokens"] > 0  # counted by the server; its share unknown
    assert first["parts"] == "system prompt (19 chars), 2 few-shot turns, user suffix"


def test_the_rollback_button_rolls_back_what_the_page_showed(
        routes_page: Callable[..., AppTest], proxy: ProxyServer) -> None:
    """r14h #5: the page shows FT's canary; the cycle rolls it back before the click: the
    click must not undo the older full promotion underneath."""
    admin = proxy.admin()
    admin.rollback("support-bot")
    admin.promote("support-bot", "ft-old")  # last month's full promotion
    admin.promote("support-bot", FT, canary=10)
    at = routes_page(ui_admin_token=ADMIN_TOKEN)
    admin.rollback("support-bot", verdict={"verdict": "rollback"})  # the cycle, meanwhile
    rollback(at).click().run()  # type: ignore[attr-defined]
    assert not at.exception
    # on main: ft-old's promotion undone, back to gpt-4o-mini
    assert any("Rollback refused" in e.value for e in at.error)
    assert [t["model"] for t in admin.routes()["support-bot"]["targets"]] == ["ft-old"]


def test_a_rollback_refused_for_an_edited_route_can_be_forced(
        routes_page: Callable[..., AppTest], proxy: ProxyServer) -> None:
    """A full promotion, then a person's edit of the route: the rollback is refused with 409
    `route_edited` (it would undo the edit). The page shows why and offers to roll back anyway
    (force), as `tuneloop rollback --force` does; the refusal alone changes nothing."""
    admin = proxy.admin()
    admin.rollback("support-bot")
    admin.promote("support-bot", FT)
    admin.put_routes({"support-bot": {"targets": [{"model": FT, "weight": 50},
                                                  {"model": "ft-other", "weight": 50}]}},
                     expect_seq=admin.routes_with_seq()["seq"])  # a person's edit
    at = routes_page(ui_admin_token=ADMIN_TOKEN)
    rollback(at).click().run()  # type: ignore[attr-defined]
    assert not at.exception
    [refusal] = [e.value for e in at.error if "Rollback refused" in e.value]
    assert "was changed since" in refusal and "roll back anyway" in refusal
    assert [t["model"] for t in admin.routes()["support-bot"]["targets"]] == [FT, "ft-other"]
    forced = next(b for b in at.button if b.label == "Roll back support-bot anyway")
    forced.click().run()
    assert not at.exception
    assert any("Rolled back" in s.value for s in at.success)
    assert [t["model"] for t in admin.routes()["support-bot"]["targets"]] == ["gpt-4o-mini"]
    assert admin.route_history("support-bot")[0]["changed_by"] == "ui:ann"
    assert not any(b.label == "Roll back support-bot anyway" for b in at.button)


def test_a_refused_rollback_need_not_be_forced(routes_page: Callable[..., AppTest],
                                               proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.rollback("support-bot")
    admin.promote("support-bot", FT)
    admin.put_routes({"support-bot": {"targets": [{"model": "ft-other"}]}},
                     expect_seq=admin.routes_with_seq()["seq"])  # a person's edit
    at = routes_page(ui_admin_token=ADMIN_TOKEN)
    rollback(at).click().run()  # type: ignore[attr-defined]
    next(b for b in at.button if b.label == "Keep the route as it is").click().run()
    assert not at.exception
    assert not any(b.label == "Roll back support-bot anyway" for b in at.button)
    assert [t["model"] for t in admin.routes()["support-bot"]["targets"]] == ["ft-other"]
