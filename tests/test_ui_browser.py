"""End to end in real headless Chromium: an app's request through the proxy, the review app
started with `tuneloop ui`, a reviewer signs in, edits the answer and approves it; and a
completion carrying HTML and script renders as inert text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ProxyServer
from tests.test_ui_browser_trust import editor_shows
from tests.ui_browser_support import CHROMIUM, CHROMIUM_ARGS, PASSWORD
from tests.ui_browser_support import review_app as serve_review_app

pytestmark = pytest.mark.browser

HOSTILE = ("<script>window.__xss = 1</script><img src=x onerror=\"window.__xss2 = 1\">"
           "<b>bold?</b>")


@pytest.fixture
def review_app(proxy: ProxyServer, tmp_path: Path) -> Iterator[str]:
    with serve_review_app(proxy, tmp_path) as url:
        yield url


def test_review_in_a_real_browser(proxy: ProxyServer, review_app: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    client = proxy.openai()
    hostile_id = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": HOSTILE}]
    ).headers["x-tuneloop-id"]
    item_id = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]
    ).headers["x-tuneloop-id"]
    proxy.wait_logged(2)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.set_default_timeout(20_000)
            page.goto(review_app)
            page.get_by_label("Your name (recorded with every review)").fill("claire")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()

            # the answer is shown once: in its editor
            answer = page.get_by_label("Answer", exact=True)
            expect(answer).to_have_value("echo: Capital of France?")
            answer.fill("The capital of France is Paris.")
            page.get_by_role("button", name="Save edit and approve").click()
            expect(page.get_by_text("edit saved (revision 1)")).to_be_visible()

            # the next item is the hostile one: its text is shown, nothing of it runs (the
            # saved item's editor stays on screen, stale, until the run drawing the next ends)
            editor_shows(page, "echo: " + HOSTILE)
            prompts = page.get_by_role("group", name="Chat message from user")
            expect(prompts.get_by_text(HOSTILE, exact=True)).to_be_visible()
            page.wait_for_timeout(500)
            assert page.evaluate("() => [window.__xss, window.__xss2]") == [None, None]
            assert page.locator("img[src='x']").count() == 0
            assert page.locator("b", has_text="bold?").count() == 0
            assert dialogs == []
        finally:
            browser.close()

    item = proxy.admin().interaction(item_id)
    assert (item["review"], item["revision"]) == ("approved", 1)
    (revision,) = item["revisions"]
    assert (revision["action"], revision["reviewer"]) == ("edit", "claire")
    assert item["current"][-1] == {"role": "assistant",
                                   "content": "The capital of France is Paris."}
    assert item["original"][-1]["content"] == "echo: Capital of France?"
    assert proxy.admin().interaction(hostile_id)["review"] == "pending"
