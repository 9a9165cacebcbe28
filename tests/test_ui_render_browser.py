"""In real headless Chromium: Arabic model text reads right-to-left, code and tables are
monospace, and a script in a message does not run."""

from __future__ import annotations

import pytest

from tests.conftest import ProxyServer
from tests.test_ui_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    review_app,  # noqa: F401  (the fixture: `tuneloop ui`)
)

pytestmark = pytest.mark.browser

ARABIC = "كيف يمكنني إلغاء اشتراكي؟"
MESSAGE = (f"{ARABIC}\n\n```python\nprint('<b>hi</b>')\n```\n\n| plan | price |\n|---|---|\n"
           "| team | 10 |\n\n<script>window.__xss = 1</script>")


def test_rtl_text_code_and_tables_in_chromium(proxy: ProxyServer,
                                              review_app: str) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": MESSAGE}])
    proxy.wait_logged(1)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(60_000)  # a loaded CI machine: slow, never wrong
            page.goto(review_app)
            page.get_by_label("Your name (recorded with every review)").fill("dana")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()

            user = page.get_by_role("group", name="Chat message from user")
            arabic = user.locator("p", has_text=ARABIC)
            expect(arabic).to_be_visible()
            style = "(e, p) => getComputedStyle(e)[p]"
            assert arabic.evaluate(style, "direction") == "rtl"
            code = user.locator("pre", has_text="print('<b>hi</b>')")
            expect(code).to_be_visible()
            assert code.evaluate(style, "direction") == "ltr"
            assert "monospace" in code.evaluate(style, "fontFamily")
            cell = user.locator("td", has_text="team")
            assert "monospace" in cell.evaluate(style, "fontFamily")
            assert user.locator("b").count() == 0
            assert page.evaluate("() => window.__xss") is None
            # the answer is shown once: in the editor, not also in the chat
            assistant = page.get_by_role("group", name="Chat message from assistant")
            expect(assistant).to_contain_text("The answer is in the editor.")
            assert ARABIC not in assistant.inner_text()
            assert page.get_by_label("Answer", exact=True).input_value() == "echo: " + MESSAGE
        finally:
            browser.close()


def test_long_text_folds_in_place_and_show_all_opens_the_same_block(
        proxy: ProxyServer, review_app: str) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    long = " ".join(f"word{n}" for n in range(900)) + " THE-END"
    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": long}])
    proxy.wait_logged(1)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(review_app)
            page.get_by_label("Your name (recorded with every review)").fill("dana")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()

            user = page.get_by_role("group", name="Chat message from user")
            body = user.locator(".tl-long .tl-body")
            expect(body).to_be_visible()
            clipped = "e => [e.clientHeight, e.scrollHeight]"
            shown, full = body.evaluate(clipped)
            assert shown < full  # folded
            user.get_by_text("Show all").click()
            expect(user.get_by_text("Show less")).to_be_visible()
            shown, full = body.evaluate(clipped)
            assert shown == full  # the same block, opened
            assert user.inner_text().count("THE-END") == 1  # the text is there once
            assert user.inner_text().count("word899") == 1
            style = "(e, p) => getComputedStyle(e)[p]"
            assert body.evaluate(style, "wordBreak") == "normal"  # wraps between words
            assert body.evaluate(style, "whiteSpace") == "normal"
        finally:
            browser.close()
