"""The review app in real Chromium under fast keys and several tabs (UIREVIEW_11): a double
Ctrl+Enter saves once and the next item's editor holds its answer; a double A acts on the item
shown only; X then 3 picks a canned reason; signing out clears the drafts and ends the other
tab's session before it acts. Waits on page state (the key lock and Streamlit's run), never on
fixed sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curation_ui.actions import NO_REASON
from tests.conftest import ProxyServer
from tests.test_review_api import logged
from tests.ui_browser_support import chromium, new_page, review_app, sign_in

pytestmark = pytest.mark.browser

IDLE = """(item) => {
  const lock = window.__tuneloop && window.__tuneloop.lock;
  return !document.querySelector('[data-testid="stStatusWidget"] button')
    && (!lock || performance.now() >= Math.max(lock.until, lock.settle || 0))
    && (!item || (!!lock && lock.shown === item));
}"""


def idle(page: Any, item: str = "") -> None:
    """Streamlit is not running a script and the key lock lets keys act again (on `item`,
    "id@revision", when given: the page has said that item is drawn)."""
    page.wait_for_function(IDLE, arg=item)


def editor_shows(page: Any, text: str) -> None:
    """One answer editor on the page, holding `text` (not an old one beside a new one)."""
    page.wait_for_function(
        "(text) => { const all = document.querySelectorAll('textarea[aria-label=\"Answer\"]');"
        " return all.length === 1 && all[0].value === text; }", arg=text)


def answer_of(proxy: ProxyServer, item_id: str) -> tuple[int, list[str]]:
    item = proxy.admin().interaction(item_id)
    return item["revision"], [str(r["action"]) for r in item["revisions"]]


def test_fast_keys_act_once_on_the_item_shown(proxy: ProxyServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    q1, q2, q3, q4 = logged(proxy, "q one", "q two", "q three", "q four")
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        page = new_page(browser)
        sign_in(page, url, "erin")
        answer = page.get_by_label("Answer", exact=True)
        editor_shows(page, "echo: q four")
        idle(page)
        answer.click()
        page.keyboard.press("End")
        page.keyboard.type(" +t1")
        page.keyboard.press("Control+Enter")
        page.wait_for_timeout(30)  # the second press of a double Ctrl+Enter
        page.keyboard.press("Control+Enter")
        editor_shows(page, "echo: q three")
        idle(page)
        editor_shows(page, "echo: q three")  # and it stays there, not emptied
        assert answer_of(proxy, q4) == (1, ["edit"])

        page.mouse.click(1000, 60)  # out of the editor: the keys act
        page.keyboard.press("a")
        page.wait_for_timeout(150)  # a double A: the second one meant for the same item
        page.keyboard.press("a")
        editor_shows(page, "echo: q two")
        idle(page)
        assert answer_of(proxy, q2) == (0, [])  # never approved unseen
        editor_shows(page, "echo: q two")

        page.mouse.click(1000, 60)
        page.keyboard.press("x")  # no reason yet: said, and 1-9 pick one (not typed digits)
        expect(page.get_by_text(NO_REASON)).to_be_visible()
        idle(page)
        page.keyboard.press("3")
        reason = page.get_by_label("Reason (required to reject, optional for needs work)")
        expect(reason).to_have_value("Unsafe or harmful")
    assert answer_of(proxy, q4) == (1, ["edit"])
    assert proxy.admin().interaction(q4)["current"][-1]["content"] == "echo: q four +t1"
    assert answer_of(proxy, q3) == (1, ["approve"])
    assert answer_of(proxy, q2) == (0, [])  # never approved unseen
    assert answer_of(proxy, q1) == (0, [])


def test_sign_out_clears_drafts_and_ends_the_other_tab(proxy: ProxyServer,
                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect

    (item_id,) = logged(proxy, "two tabs")
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        first = new_page(browser)
        sign_in(first, url, "dora")
        answer = first.get_by_label("Answer", exact=True)
        expect(answer).to_have_value("echo: two tabs")
        answer.fill("customer text draft")
        answer.press("End")
        first.keyboard.type("!")  # an input event: the draft is kept in localStorage
        first.wait_for_function("() => Object.keys(localStorage)"
                                ".some(k => k.startsWith('tuneloop-draft:dora:'))")
        second = first.context.new_page()  # the same browser: the cookie signs it in
        second.goto(url)
        expect(second.get_by_label("Answer", exact=True)).to_have_value("customer text draft!")
        idle(second)

        first.get_by_role("button", name="Sign out").click()
        expect(first.get_by_label("Your name (recorded with every review)")).to_be_visible()
        second.mouse.click(1000, 60)
        second.keyboard.press("a")  # the open tab: its sign-in has ended, nothing is sent
        expect(second.get_by_text("Your sign-in has ended")).to_be_visible()
        expect(second.get_by_label("Your name (recorded with every review)")).to_be_visible()
        assert answer_of(proxy, item_id) == (0, [])
        first.wait_for_function("() => !Object.keys(localStorage)"
                                ".some(k => k.startsWith('tuneloop-draft:'))")
    assert answer_of(proxy, item_id) == (0, [])
