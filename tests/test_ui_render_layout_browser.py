"""In real headless Chromium at 1440×900: a multi-turn item keeps the answer being judged and
its actions on screen (Queue and Item), canned reasons read whole, the answer editor follows
the text's direction, and loading the app asks nothing of any host but our own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ProxyServer
from tests.ui_browser_support import chromium, new_page, review_app, sign_in

pytestmark = pytest.mark.browser

TURNS = [("Hi", "Hello! How can I help?"),
         ("My order is late", "Sorry to hear. Order number?"),
         ("It is 998877, placed last Monday", None)]
ARABIC = "كيف يمكنني إلغاء اشتراكي في الخدمة؟"
VIEW = {"width": 1440, "height": 900}


@pytest.fixture
def app_url(proxy: ProxyServer, tmp_path: Path) -> Iterator[str]:
    with review_app(proxy, tmp_path) as url:
        yield url


def three_turns(proxy: ProxyServer) -> None:
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are SupportBot for ACME. Refunds within 30 days."}]
    for user, answer in TURNS:
        messages.append({"role": "user", "content": user})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=messages)
    proxy.wait_logged(1)


def in_view(page: Any, locator: Any) -> bool:
    """The element is wholly inside the 1440×900 window as the page is (not scrolled)."""
    assert page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')"
                         "?.scrollTop ?? 0") == 0
    box = locator.bounding_box()
    return bool(box and box["y"] >= 0 and box["y"] + box["height"] <= VIEW["height"]
                and box["x"] >= 0 and box["x"] + box["width"] <= VIEW["width"])


def test_a_three_turn_item_shows_the_answer_and_the_actions_without_scrolling(
        proxy: ProxyServer, app_url: str) -> None:
    from playwright.sync_api import expect

    three_turns(proxy)
    with chromium() as browser:
        page = new_page(browser)
        sign_in(page, app_url, "dana")
        editor = page.get_by_label("Answer", exact=True)
        expect(editor).to_have_value("echo: It is 998877, placed last Monday")
        expect(page.get_by_text("It is 998877, placed last Monday", exact=True)).to_be_visible()
        for where in ("queue", "item"):
            if where == "item":
                page.get_by_role("button", name="Open its history").click()
                expect(page.get_by_role("tab", name="History")).to_be_visible()
                expect(editor).to_have_value("echo: It is 998877, placed last Monday")
            assert in_view(page, editor), where
            assert in_view(page, page.get_by_role("button", name=re.compile("^Approve"))), where
            assert in_view(page, page.get_by_role("button", name="Save edit and approve")), where
            assert in_view(page, page.get_by_role("button", name="Reject with reason")), where
            # the earlier turns are one line each, opened by a click
            earlier = page.get_by_role("group", name="Chat message from user").first
            summary = earlier.locator("summary")
            expect(summary).to_contain_text("Hi")
            summary.click()
            expect(earlier.locator("details")).to_have_attribute("open", "")


def test_canned_reasons_read_whole(proxy: ProxyServer, app_url: str) -> None:
    from playwright.sync_api import expect

    three_turns(proxy)
    with chromium() as browser:
        page = new_page(browser)
        sign_in(page, app_url, "dana")
        last = page.get_by_role("button", name="9 Truncated or empty answer")
        expect(last).to_be_visible()
        clipped = page.evaluate("""() => [...document.querySelectorAll('button')]
            .filter(b => /^[1-9] /.test(b.innerText))
            .flatMap(b => [b, ...b.querySelectorAll('*')])
            .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)""")
        assert clipped == []
        texts = page.evaluate("""() => [...document.querySelectorAll('button')]
            .map(b => b.querySelector('p')?.innerText.trim() ?? '')
            .filter(t => /^[1-9] /.test(t))""")
        assert "1 Factually wrong" in texts and "9 Truncated or empty answer" in texts
        assert in_view(page, last)


def ink_columns(png: bytes) -> tuple[float, float]:
    """Where the dark pixels of a screenshot's first lines (the text, not the resize grip)
    start and end, as shares of its width."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    pixels = image.load()
    columns = [x for x in range(8, width - 8)
               if any(pixels[x, y] < 110 for y in range(4, min(48, height - 4)))]
    assert columns, "no text in the editor"
    return columns[0] / width, columns[-1] / width


def test_the_answer_editor_follows_the_texts_direction(proxy: ProxyServer,
                                                       app_url: str) -> None:
    from playwright.sync_api import expect

    three_turns(proxy)
    with chromium() as browser:
        page = new_page(browser)
        sign_in(page, app_url, "dana")
        editor = page.get_by_label("Answer", exact=True)
        expect(editor).to_have_value("echo: It is 998877, placed last Monday")
        assert editor.evaluate("e => getComputedStyle(e).unicodeBidi") == "plaintext"
        editor.fill(ARABIC)
        start, end = ink_columns(editor.screenshot())
        assert start > 0.4 and end > 0.85, (start, end)  # right-aligned, read right to left
        editor.fill("Plain English text")
        start, end = ink_columns(editor.screenshot())
        assert start < 0.1 and end < 0.6, (start, end)


def test_loading_the_app_asks_no_host_but_our_own(proxy: ProxyServer, app_url: str) -> None:
    from playwright.sync_api import expect

    three_turns(proxy)
    with chromium() as browser:
        page = new_page(browser)
        hosts: list[str] = []
        page.context.on("request", lambda request: hosts.append(request.url))
        sign_in(page, app_url, "dana")
        expect(page.get_by_label("Answer", exact=True)).to_be_visible()
        page.reload()
        expect(page.get_by_label("Answer", exact=True)).to_be_visible()
        icon = page.evaluate("() => document.querySelector(\"link[rel='shortcut icon']\")"
                             "?.href ?? ''")
        page.wait_for_timeout(1500)  # the page icon is set a moment after the first draw
        assert hosts
        away = [url for url in hosts if not url.startswith("data:")  # a blob: is the page's own
                and urlsplit(url.removeprefix("blob:")).hostname not in ("127.0.0.1",
                                                                         "localhost")]
        assert away == [], away
        assert "gstatic" not in icon
