"""Reviewing in real Chromium: one revision per Ctrl+Enter, a typed answer survives a reload;
two reviewers get different items and the loser of a conflict keeps their text, and a click
on the conflict panel while it is being drawn again is not lost; an item without an answer
can't be approved with A (and A doesn't type into the id box)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ProxyServer
from tests.test_review_api import logged
from tests.test_review_trainable import failed
from tests.test_ui_browser_trust import editor_shows, idle
from tests.ui_browser_support import api_gate, app_idle, chromium, new_page, review_app, sign_in

pytestmark = pytest.mark.browser


def test_one_revision_per_ctrl_enter_and_drafts_survive_a_reload(
        proxy: ProxyServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    older, newer = logged(proxy, "first question", "second question")
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        page = new_page(browser)
        sign_in(page, url, "erin")
        answer = page.get_by_label("Answer", exact=True)
        expect(answer).to_have_value("echo: second question")
        answer.fill("The final answer.")
        answer.press("Control+Enter")
        expect(page.get_by_text("edit saved (revision 1)")).to_be_visible()
        # the saved item's editor stays on screen (stale) until the run drawing the next ends
        editor_shows(page, "echo: first question")
        page.wait_for_timeout(1500)  # a second submit would land by now
        assert page.get_by_text("Someone else reviewed").count() == 0

        answer.fill("A draft worth keeping.")
        page.wait_for_timeout(300)
        page.reload()
        editor_shows(page, "A draft worth keeping.")
    item = proxy.admin().interaction(newer)
    assert (item["review"], item["revision"]) == ("approved", 1)
    assert [r["action"] for r in item["revisions"]] == ["edit"]
    assert item["current"][-1]["content"] == "The final answer."
    assert proxy.admin().interaction(older)["revision"] == 0


def test_two_reviewers_get_different_items_and_a_conflict_keeps_the_losers_text(
        proxy: ProxyServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _older, newer = logged(proxy, "first question", "second question")
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        ann, bob = new_page(browser), new_page(browser)
        sign_in(ann, url, "ann")
        expect(ann.get_by_label("Answer", exact=True)).to_have_value("echo: second question")
        sign_in(bob, url, "bob")
        expect(bob.get_by_label("Answer", exact=True)).to_have_value("echo: first question")

        ann.get_by_label("Answer", exact=True).fill("Ann's careful answer.")
        proxy.admin().release(newer, reviewer="ann")  # as if ann's claim ran out
        bob.goto(f"{url}/item?id={newer}")
        expect(bob.get_by_text("Nobody holds this item.")).to_be_visible()
        bob.get_by_role("button", name=re.compile("^Approve")).click()
        expect(bob.get_by_text("approve saved (revision 1)")).to_be_visible()

        ann.get_by_label("Answer", exact=True).press("Control+Enter")
        expect(ann.get_by_text("Someone else reviewed this item")).to_be_visible()
        expect(ann.get_by_label("Your answer")).to_have_value("Ann's careful answer.")
        ann.get_by_role("button", name="Re-apply mine").click()
        expect(ann.get_by_text("edit saved (revision 2)")).to_be_visible()
    item = proxy.admin().interaction(newer)
    assert [(r["reviewer"], r["action"]) for r in item["revisions"]] == [
        ("bob", "approve"), ("ann", "edit")]
    assert item["current"][-1]["content"] == "Ann's careful answer."


def test_a_click_on_the_conflict_panel_while_a_run_draws_it_is_not_lost(
        proxy: ProxyServer, tmp_path: Path) -> None:
    """On the Queue the panel is drawn in a fragment: a click made while that run is still
    going waits for its end, and the panel used to end it with `st.stop()`, which drops the
    waiting click (the reviewer's "Re-apply mine" did nothing, the panel stayed; on a busy
    machine a fast click lands in that moment). The gate holds the run at a known point."""
    from playwright.sync_api import expect

    _older, newer = logged(proxy, "first question", "second question")
    with api_gate(proxy.url) as (gate, api), review_app(proxy, tmp_path, api=api) as url, \
            chromium() as browser:
        ann = new_page(browser)
        sockets: list[Any] = []
        ann.on("websocket", lambda socket: sockets.append(socket))
        sign_in(ann, url, "ann")
        answer = ann.get_by_label("Answer", exact=True)
        expect(answer).to_have_value("echo: second question")
        answer.fill("Ann's careful answer.")
        proxy.admin().release(newer, reviewer="ann")
        proxy.admin().review(newer, "approve", reviewer="bob", expected_revision=0)
        answer.press("Control+Enter")
        mine = ann.get_by_label("Your answer")
        expect(mine).to_have_value("Ann's careful answer.")
        app_idle(ann)

        # the panel's next run waits on its look at the item, with the panel still on screen
        with gate.holding(f"^/admin/interactions/{newer}$") as wait_held:
            mine.fill("Ann's careful answer, revised.")
            mine.blur()  # the text area sends its text: a run of the pane
            wait_held()
            socket = [s for s in sockets if "/_stcore/stream" in s.url][-1]  # the app's own
            with socket.expect_event("framesent"):  # the click has left the browser
                ann.get_by_role("button", name="Re-apply mine").click()
            ann.wait_for_timeout(500)  # and reached the server (a slower one: the old code passes)
        expect(ann.get_by_text("edit saved (revision 2)")).to_be_visible()
    item = proxy.admin().interaction(newer)
    assert [(r["reviewer"], r["action"]) for r in item["revisions"]] == [
        ("bob", "approve"), ("ann", "edit")]
    assert item["current"][-1]["content"] == "Ann's careful answer, revised."


def test_a_key_press_never_approves_an_error_item(proxy: ProxyServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    error = failed(proxy, "broken question")
    (good,) = logged(proxy, "good question")
    proxy.admin().review(good, "needs_work", reviewer="zed", expected_revision=0)  # off queue
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        page = new_page(browser)
        sign_in(page, url, "finn")
        expect(page.get_by_text("Nothing pending here.")).to_be_visible()  # not in the queue
        page.goto(f"{url}/item")
        box = page.get_by_label("Interaction id")
        box.fill(error)
        box.press("Enter")
        expect(page.get_by_text("Can't be approved as it is")).to_be_visible()
        expect(box).not_to_be_focused()  # Enter left the id box: the keys act on the item
        page.keyboard.press("a")
        page.wait_for_timeout(1500)
        expect(box).to_have_value(error)  # the key did not type into the id box
        expect(page.get_by_text("Can't be approved as it is")).to_be_visible()

        box.fill(good)  # the keys work again once the next item is shown
        box.press("Enter")
        expect(page.get_by_text("needs_work · revision 1")).to_be_visible()
        expect(box).not_to_be_focused()
        idle(page, f"{good}@1")  # the keys act once the whole item is drawn (and a moment after)
        page.keyboard.press("a")
        expect(page.get_by_text("approve saved (revision 2)")).to_be_visible()
    item = proxy.admin().interaction(error)
    assert (item["review"], item["revision"]) == ("pending", 0)
    assert proxy.admin().interaction(good)["review"] == "approved"
