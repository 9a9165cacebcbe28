"""The review app's pages with Streamlit's AppTest, against a real proxy on loopback: the app
gets its settings from the TUNELOOP_* environment, as under `tuneloop ui`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from curation_ui.actions import NO_REASON
from tests.conftest import REVIEWER_TOKEN, ProxyServer
from tests.test_review_api import logged
from tests.ui_html import page_texts

APP = str(Path(__file__).resolve().parent.parent / "curation_ui" / "app.py")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Iterator[Callable[..., AppTest]]:
    monkeypatch.setenv("TUNELOOP_API", proxy.url)
    monkeypatch.setenv("TUNELOOP_DB", str(tmp_path / "ui" / "tuneloop.duckdb"))
    monkeypatch.setenv("TUNELOOP_REVIEWER_TOKEN", REVIEWER_TOKEN)
    monkeypatch.setenv("TUNELOOP_UI_PASSWORD", PASSWORD)
    monkeypatch.delenv("TUNELOOP_ADMIN_TOKEN", raising=False)
    st.cache_resource.clear()  # settings and client are per process; each test has its proxy

    def open_app(name: str = "ann", password: str = PASSWORD) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=30).run()
        at.text_input[0].input(name)
        at.text_input[1].input(password)
        at.button[0].click().run()
        assert not at.exception, at.exception
        return at

    yield open_app
    st.cache_resource.clear()


def button(at: AppTest, label: str) -> Any:
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no {label!r} button among {[b.label for b in at.button]}"
    return matches[0]


def texts(at: AppTest) -> list[str]:
    return page_texts(at)  # st.text, rendered messages and header values, the answer editor


def test_sign_in_needs_the_password_and_a_name(app: Callable[..., AppTest]) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input("mallory")
    at.text_input[1].input("guess")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."]
    assert "reviewer" not in at.session_state
    at.text_input[0].input("   ")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert "reviewer" not in at.session_state
    assert app("ann").session_state["reviewer"] == "ann"


def test_queue_flow_approve_moves_to_the_next_item(app: Callable[..., AppTest],
                                                   proxy: ProxyServer) -> None:
    older, newer = logged(proxy, "first question", "second question")
    at = app("ann")
    assert "echo: second question" in texts(at)  # newest first
    button(at, "Approve").click().run()
    assert not at.exception
    assert "echo: first question" in texts(at) and "echo: second question" not in texts(at)
    item = proxy.admin().interaction(newer)
    assert (item["review"], item["revision"]) == ("approved", 1)
    assert item["revisions"][0]["reviewer"] == "ann"
    assert item["revisions"][0]["role"] == "reviewer"
    button(at, "Skip for now").click().run()
    assert "Only skipped items are left." in [s.value for s in at.success]
    assert proxy.admin().interaction(older)["review"] == "pending"


def test_edit_then_approve(app: Callable[..., AppTest], proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "capital of France?")
    at = app("bob")
    answer = next(t for t in at.text_area if t.label == "Answer")
    assert answer.value == "echo: capital of France?"
    answer.input("Paris.")
    button(at, "Save edit and approve").click().run()
    assert not at.exception
    item = proxy.admin().interaction(item_id)
    assert item["review"] == "approved" and item["current"][-1] == {
        "role": "assistant", "content": "Paris."}
    assert item["original"][-1]["content"] == "echo: capital of France?"
    assert item["revisions"][0]["action"] == "edit"

    button(at, "Undo: edit").click().run()
    item = proxy.admin().interaction(item_id)
    assert (item["review"], item["revision"]) == ("pending", 2)


def test_reject_needs_a_reason(app: Callable[..., AppTest], proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "rude reply")
    at = app()
    button(at, "Reject with reason").click().run()
    assert NO_REASON in [e.value for e in at.error]
    assert proxy.admin().interaction(item_id)["revision"] == 0
    next(t for t in at.text_input if t.label.startswith("Reason")).input("impolite")
    button(at, "Reject with reason").click().run()
    item = proxy.admin().interaction(item_id)
    assert item["review"] == "rejected" and item["revisions"][0]["reason"] == "impolite"


def test_a_conflict_keeps_my_answer_and_re_applies_it(app: Callable[..., AppTest],
                                                      proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "contested")
    at = app("ann")
    proxy.admin().release(item_id, reviewer="ann")  # the queue claimed it; ann left
    at.session_state["item_id"] = item_id
    at.switch_page("views/item.py").run()
    next(t for t in at.text_area if t.label == "Answer").input("ann's careful answer")
    proxy.admin().review(item_id, "reject", reviewer="bob", reason="off", expected_revision=0)
    button(at, "Save edit and approve").click().run()
    assert not at.exception
    assert any("Someone else reviewed this item" in w.value for w in at.warning)
    item = proxy.admin().interaction(item_id)
    assert (item["review"], item["revision"]) == ("rejected", 1)  # nothing overwritten
    mine = next(t for t in at.text_area if t.label == "Your answer")
    assert mine.value == "ann's careful answer"
    assert "rejected · revision 1 · by bob" in texts(at)
    button(at, "Re-apply mine").click().run()
    assert not at.exception
    item = proxy.admin().interaction(item_id)
    assert (item["review"], item["revision"]) == ("approved", 2)
    assert item["current"][-1]["content"] == "ann's careful answer"
    assert [r["reviewer"] for r in item["revisions"]] == ["bob", "ann"]


def test_the_queue_stays_on_a_conflicted_item(app: Callable[..., AppTest],
                                              proxy: ProxyServer) -> None:
    _older, newer = logged(proxy, "first question", "second question")
    at = app("ann")
    assert proxy.admin().interaction(newer)["claimed_by"] == "ann"
    proxy.admin().release(newer, reviewer="ann")  # as if ann's claim ran out
    proxy.admin().review(newer, "approve", reviewer="bob", expected_revision=0)
    next(t for t in at.text_area if t.label == "Answer").input("my better answer")
    button(at, "Save edit and approve").click().run()
    assert any("Someone else reviewed this item" in w.value for w in at.warning)
    assert next(t for t in at.text_area if t.label == "Your answer").value == "my better answer"
    button(at, "Keep the current one").click().run()
    assert proxy.admin().interaction(newer)["current"][-1]["content"] == "echo: second question"
    assert "echo: first question" in next(t for t in at.text_area if t.label == "Answer").value


def test_two_reviewers_get_different_items(app: Callable[..., AppTest],
                                           proxy: ProxyServer) -> None:
    older, newer = logged(proxy, "first question", "second question")
    ann, bob = app("ann"), app("bob")
    assert next(t for t in ann.text_area if t.label == "Answer").value == "echo: second question"
    assert next(t for t in bob.text_area if t.label == "Answer").value == "echo: first question"
    assert proxy.admin().interaction(older)["claimed_by"] == "bob"
    assert any("You hold this item" in c.value for c in bob.caption)
    assert any("1 open with other reviewers" in c.value for c in bob.caption)
    bob.session_state["item_id"] = newer
    bob.switch_page("views/item.py").run()
    assert any("ann holds this item" in w.value for w in bob.warning)
    button(ann, "Skip for now").click().run()  # releases it; nothing else is left for ann
    assert proxy.admin().interaction(newer)["claimed_by"] is None


def test_an_item_without_an_answer_cannot_be_approved(app: Callable[..., AppTest],
                                                      proxy: ProxyServer) -> None:
    from tests.test_review_trainable import failed

    error = failed(proxy, "broken question")
    at = app("ann")
    assert any("Nothing pending here." in s.value for s in at.success)  # not in the queue
    at.session_state["item_id"] = error
    at.switch_page("views/item.py").run()
    assert any("Can't be approved as it is" in e.value for e in at.error)
    approve = button(at, "Approve (needs an answer first)")
    assert approve.disabled
    next(t for t in at.text_area if t.label == "Answer").input("The service is down.")
    button(at, "Save edit and approve").click().run()
    item = proxy.admin().interaction(error)
    assert item["review"] == "approved" and item["current"][-1]["content"] == "The service is down."


def test_one_submit_per_item_and_revision(app: Callable[..., AppTest],
                                          proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "only once")
    at = app("ann")
    at.session_state["item_id"] = item_id
    at.switch_page("views/item.py").run()
    at.session_state["acted"] = {f"{item_id}@0": "approve"}  # the first submit went out
    button(at, "Approve").click().run()  # a second delivery of it is dropped
    assert not at.exception and not at.warning
    assert proxy.admin().interaction(item_id)["revision"] == 0


def test_canned_reasons_fill_the_reason_box(app: Callable[..., AppTest],
                                            proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "rude reply")
    at = app("ann")
    button(at, "3 Unsafe or harmful").click().run()
    reason = next(t for t in at.text_input if t.label.startswith("Reason"))
    assert reason.value == "Unsafe or harmful"
    button(at, "Reject with reason").click().run()
    item = proxy.admin().interaction(item_id)
    assert item["review"] == "rejected" and item["revisions"][0]["reason"] == "Unsafe or harmful"


def test_progress_counts_the_whole_queue(app: Callable[..., AppTest],
                                         proxy: ProxyServer) -> None:
    ids = logged(proxy, "p1", "p2", "p3")
    proxy.admin().review(ids[0], "approve", reviewer="ann", expected_revision=0)
    at = app("ann")
    assert any(c.value.startswith("2 of 3 pending · 1 by you today") for c in at.caption)


def test_bulk_reject_on_browse(app: Callable[..., AppTest], proxy: ProxyServer) -> None:
    a, b, c = logged(proxy, "bulk one", "bulk two", "bulk three")
    at = app("ann")
    at.switch_page("views/browse.py").run()
    table = at.dataframe[0].value
    assert list(table["id"]) == [c, b, a]
    at.session_state["browse_table"] = {"selection": {"rows": [0, 2], "columns": [],
                                                      "cells": []}}
    at.run()
    next(t for t in at.text_input if t.label.startswith("Reason")).input("duplicates")
    button(at, "Reject selected").click().run()
    assert not at.exception
    states = {i: proxy.admin().interaction(i)["review"] for i in (a, b, c)}
    assert states == {a: "rejected", b: "pending", c: "rejected"}
    assert any("2 ok" in s.value for s in at.success)


def test_item_page_shows_history_and_the_diff(app: Callable[..., AppTest],
                                              proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "diff me")
    original = proxy.admin().interaction(item_id)["original"]
    proxy.admin().review(item_id, "edit", reviewer="bob", expected_revision=0,
                         messages=[*original[:-1], {"role": "assistant", "content": "better"}])
    at = app()
    at.session_state["item_id"] = item_id
    at.switch_page("views/item.py").run()
    assert not at.exception
    history = at.dataframe[0].value
    assert list(history["action"]) == ["edit"] and list(history["reviewer"]) == ["bob"]
    diff = "\n".join(c.value for c in at.code)
    assert "-echo: diff me" in diff and "+better" in diff


def test_stats_page(app: Callable[..., AppTest], proxy: ProxyServer) -> None:
    a, _b = logged(proxy, "s1", "s2")
    proxy.admin().review(a, "approve", reviewer="ann", expected_revision=0)
    at = app()
    at.switch_page("views/stats.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["approved"] == "1" and metrics["pending"] == "1"


def test_stats_page_sums_the_models_past_the_servers_top_ones(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:
    """31 models, one more than GET /admin/stats lists (`stats_top_models`): the last one is
    the server's summed row (`model` null), told in a caption, not drawn as a model."""
    for n in range(31):
        logged(proxy, f"q{n}", model=f"m{n:02d}")
    at = app()
    at.switch_page("views/stats.py").run()
    assert not at.exception
    assert "Other models (1): 1 interactions, 1 pending" in [c.value for c in at.caption]


def test_model_text_is_shown_as_text_never_as_markdown(app: Callable[..., AppTest],
                                                       proxy: ProxyServer) -> None:
    hostile = "**bold** <img src=x onerror=alert(1)> [link](javascript:alert(2))"
    logged(proxy, hostile, "follow-up")
    at = app()
    button(at, "Skip for now").click().run()  # the hostile one is the user's prompt: shown
    assert "echo: " + hostile in texts(at)  # in the editor, exactly as written
    rendered = "".join(h.value for h in at.html)
    assert "bold <img src=x onerror=alert(1)> [link](javascript:alert(2))" in texts(at)
    assert "<img" not in rendered and "href" not in rendered and "<strong>bold</strong>" in rendered
    markdown = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not any("onerror" in m or "javascript:" in m for m in markdown)


def test_the_item_page_keeps_the_revision_it_showed(app: Callable[..., AppTest],
                                                    proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "watched")
    at = app("ann")
    proxy.admin().release(item_id, reviewer="ann")  # the queue claimed it; ann left
    at.session_state["item_id"] = item_id
    at.switch_page("views/item.py").run()
    proxy.admin().review(item_id, "approve", reviewer="bob", expected_revision=0)
    next(t for t in at.text_input if t.label.startswith("Reason")).input("bad")
    button(at, "Reject with reason").click().run()
    assert any("Someone else reviewed this item" in w.value for w in at.warning)
    item = proxy.admin().interaction(item_id)
    assert (item["review"], [r["reviewer"] for r in item["revisions"]]) == ("approved", ["bob"])
    assert "approved · revision 1 · by bob" in texts(at)  # shown as it is now


def test_an_alternative_answer_can_be_taken(app: Callable[..., AppTest],
                                            proxy: ProxyServer) -> None:
    item_id = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", n=2, messages=[{"role": "user", "content": "pick"}]
    ).headers["x-tuneloop-id"]
    proxy.wait_logged(1)
    at = app()
    assert "echo: pick (1)" in texts(at)
    button(at, "Use answer 1").click().run()
    assert next(t for t in at.text_area if t.label == "Answer").value == "echo: pick (1)"
    button(at, "Save edit and approve").click().run()
    assert proxy.admin().interaction(item_id)["current"][-1]["content"] == "echo: pick (1)"


def test_guidelines_and_the_keys_in_the_sidebar(app: Callable[..., AppTest], proxy: ProxyServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    logged(proxy, "anything")
    monkeypatch.setenv("TUNELOOP_UI_GUIDELINES", "## House rules\n- cite the **policy**")
    monkeypatch.setenv("TUNELOOP_UI_REJECT_REASONS", '["Too rude", "Wrong language"]')
    at = app("ann")
    assert "## House rules\n- cite the **policy**" in [m.value for m in at.sidebar.markdown]
    assert [b.label for b in at.button if b.label[:1].isdigit()] == ["1 Too rude",
                                                                     "2 Wrong language"]


def test_a_new_sign_in_finds_the_skip_list_and_the_undo(app: Callable[..., AppTest],
                                                        proxy: ProxyServer) -> None:
    older, newer = logged(proxy, "first question", "second question")
    at = app("ann")
    button(at, "Skip for now").click().run()  # newer skipped
    button(at, "Approve").click().run()  # older approved
    again = app("ann")  # a reload or another tab: a new session
    assert "Only skipped items are left." in [s.value for s in again.success]
    button(again, "Undo: approve").click().run()
    assert proxy.admin().interaction(older)["review"] == "pending"
    assert proxy.admin().interaction(newer)["review"] == "pending"
