"""In real Chromium: signed out, no page of the review app shows anything logged, whatever
its URL; signed in, a reload keeps the reviewer signed in; signing out ends it, and a copy of
the old cookie is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ProxyServer
from tests.ui_browser_support import app_idle, chromium, new_page, review_app, sign_in

pytestmark = pytest.mark.browser

SECRET = "the-logged-prompt-7f3a"
PATHS = ["/", "/queue", "/item?id={id}", "/item", "/browse", "/stats", "/datasets", "/jobs",
         "/routes", "/signin", "/app", "/pages/item?id={id}", "/views/item?id={id}"]


def test_signed_out_no_page_shows_logged_text(proxy: ProxyServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    item_id = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET}]
    ).headers["x-tuneloop-id"]
    proxy.wait_logged(1)
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        page = new_page(browser)
        for path in PATHS:
            if path.count("/") == 1:
                page.goto(url + path.format(id=item_id))
                expect(page.get_by_label("Your name (recorded with every review)")
                       ).to_be_visible()
                app_idle(page)  # the run has ended: all the page would draw is drawn
                if path != "/app":  # a page's address (/queue, /signin too): no "not found"
                    assert page.get_by_text("Page not found").count() == 0, path
            else:  # deeper paths load no app at all: once the network is quiet, that's all
                page.goto(url + path.format(id=item_id), wait_until="networkidle")
            body = page.locator("body").inner_text()
            assert SECRET not in body and item_id not in body, path
            assert page.get_by_role("button", name="Build dataset").count() == 0, path
            assert page.locator('[data-testid="stSidebarNav"]').count() == 0, path
    assert proxy.admin().datasets()["datasets"] == []


def test_reload_keeps_the_reviewer_signed_in_and_sign_out_ends_it(
        proxy: ProxyServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET}])
    proxy.wait_logged(1)
    with review_app(proxy, tmp_path) as url, chromium() as browser:
        page = new_page(browser)
        sign_in(page, url, "dora")
        expect(page.get_by_label("Answer", exact=True)).to_have_value("echo: " + SECRET)
        page.reload()
        expect(page.get_by_label("Answer", exact=True)).to_have_value("echo: " + SECRET)
        expect(page.get_by_text("dora", exact=True)).to_be_visible()
        cookies = [c for c in page.context.cookies() if c["name"] == "tuneloop_review_session"]
        assert len(cookies) == 1 and cookies[0]["sameSite"] == "Strict"

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Your name (recorded with every review)")).to_be_visible()
        page.reload()
        expect(page.get_by_label("Your name (recorded with every review)")).to_be_visible()
        app_idle(page)
        assert SECRET not in page.locator("body").inner_text()

        other = browser.new_context(viewport={"width": 1440, "height": 900})
        other.add_cookies(cookies)  # a copy of the signed-out cookie is refused
        stolen = other.new_page()
        stolen.goto(url)
        expect(stolen.get_by_label("Your name (recorded with every review)")).to_be_visible()
        app_idle(stolen)
        assert SECRET not in stolen.locator("body").inner_text()
