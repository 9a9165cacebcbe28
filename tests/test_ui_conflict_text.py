"""What a reviewer wrote (or picked) is in what every run sends the browser, not only in the run
that first put it in the session (AppTest, a real proxy on loopback): the conflict panel's
"Your answer", a draft handed back after a reload, a canned reason. A value put only into the
session state goes to the browser once (a one-shot `set_value`), with that run; a rerun
request that cuts the run short (in the browser test: the draft keeper asking, right after the
save, to restore the text just typed), or a next run that starts before its messages went out
(it clears them), and the browser drew the widget from its own default: an empty "Your
answer", which a Re-apply then sent back. `browser_shows` reads what such a browser shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from tests.conftest import ProxyServer
from tests.test_review_api import logged
from tests.test_ui_app import app, button  # noqa: F401  (the fixture)


def browser_shows(area: Any) -> str:
    """What a browser shows in a text area drawn from this run's message alone."""
    return str(area.proto.value if area.proto.set_value else area.proto.default)


def mine(at: AppTest) -> Any:
    return next(t for t in at.text_area if t.label == "Your answer")


def test_a_later_run_of_the_conflict_panel_still_carries_my_answer(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:  # noqa: F811
    _older, newer = logged(proxy, "first question", "second question")
    at = app("ann")
    proxy.admin().release(newer, reviewer="ann")  # as if ann's claim ran out
    proxy.admin().review(newer, "approve", reviewer="bob", expected_revision=0)
    next(t for t in at.text_area if t.label == "Answer").input("my better answer")
    button(at, "Save edit and approve").click().run()
    assert browser_shows(mine(at)) == "my better answer"
    at.run()  # the next run, as if the browser never got the one before
    assert not at.exception
    assert browser_shows(mine(at)) == "my better answer"
    mine(at).input(browser_shows(mine(at)))  # what that browser sends back with a click
    button(at, "Re-apply mine").click().run()
    item = proxy.admin().interaction(newer)
    assert [(r["reviewer"], r["action"]) for r in item["revisions"]] == [
        ("bob", "approve"), ("ann", "edit")]
    assert item["current"][-1]["content"] == "my better answer"


def test_re_applying_an_empty_answer_keeps_the_panel(
        app: Callable[..., AppTest], proxy: ProxyServer) -> None:  # noqa: F811
    """An emptied "Your answer" is not sent (it would be refused): the panel used to go with
    the refusal, and the Queue moved on to the next item."""
    _older, newer = logged(proxy, "first question", "second question")
    at = app("ann")
    proxy.admin().release(newer, reviewer="ann")
    proxy.admin().review(newer, "approve", reviewer="bob", expected_revision=0)
    next(t for t in at.text_area if t.label == "Answer").input("my better answer")
    button(at, "Save edit and approve").click().run()
    mine(at).input("  ")
    button(at, "Re-apply mine").click().run()
    assert not at.exception
    assert "Your answer is empty: write it, or keep the current one." in [
        e.value for e in at.error]
    assert proxy.admin().interaction(newer)["revision"] == 1  # nothing sent
    mine(at).input("my better answer, again")
    button(at, "Re-apply mine").click().run()
    item = proxy.admin().interaction(newer)
    assert item["revision"] == 2
    assert item["current"][-1]["content"] == "my better answer, again"


def test_a_later_run_still_carries_a_restored_draft(app: Callable[..., AppTest],  # noqa: F811
                                                    proxy: ProxyServer) -> None:
    """A draft kept in the browser, handed back after a reload, goes into the editor once (the
    browser asks once a page load): a later run showed the logged answer in its place, and
    the reviewer's next keystroke overwrote the kept draft."""
    (item_id,) = logged(proxy, "capital of France?")
    at = app("ann")
    at.session_state["tuneloop-draft"] = {  # what the draft keeper hands back after a reload
        "draft": {"key": f"tuneloop-draft:ann:{item_id}", "text": "Paris, kept."}}
    at.run()
    answer = next(t for t in at.text_area if t.label == "Answer")
    assert browser_shows(answer) == "Paris, kept."
    at.run()
    assert not at.exception
    answer = next(t for t in at.text_area if t.label == "Answer")
    assert browser_shows(answer) == "Paris, kept."


def test_a_later_run_still_carries_a_canned_reason(app: Callable[..., AppTest],  # noqa: F811
                                                   proxy: ProxyServer) -> None:
    """A canned reason (keys 1-9) put in the reason box is there on later runs too: the box
    showed empty, and X then asked for a reason."""
    logged(proxy, "rude reply")
    at = app("ann")
    next(b for b in at.button if b.label == "3 Unsafe or harmful").click().run()
    at.run()
    assert not at.exception
    box = next(t for t in at.text_input if t.label.startswith("Reason"))
    assert browser_shows(box) == "Unsafe or harmful"
