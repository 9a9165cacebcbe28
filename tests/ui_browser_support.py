"""Shared by the Chromium tests: start the review app with `tuneloop ui` against a proxy on
loopback (directly, or through `ApiGate`, a relay that can hold one admin API call), and sign
a reviewer in."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from curation_ui.signin_cookie import COOKIE_NAME
from tests.conftest import REVIEWER_TOKEN, ProxyServer
from tests.fakes.server import free_port, serve_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "browser-test-password"


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("TUNELOOP_REQUIRE_BROWSER"):  # set by .ci/run: CI must run this test
            pytest.fail(f"{CHROMIUM} is missing, and .ci/run requires the browser test")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")


@contextmanager
def review_app(proxy: ProxyServer, tmp_path: Path, *, api: str | None = None,
               **env_extra: str) -> Iterator[str]:
    """The review app's URL, served by `tuneloop ui` for the duration (talking to the proxy's
    admin API at `api`, the proxy itself unless given)."""
    need_chromium()
    port = free_port()
    env = {**os.environ, "TUNELOOP_REVIEWER_TOKEN": REVIEWER_TOKEN,
           "TUNELOOP_UI_PASSWORD": PASSWORD, "TUNELOOP_DB": str(tmp_path / "ui.duckdb"),
           **env_extra}
    env.pop("TUNELOOP_ADMIN_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "ui", "--port", str(port),
         "--api", api or proxy.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"the review app did not start:\n{output}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class ApiGate:
    """A relay on loopback between the review app and the proxy's admin API that passes every
    call on, except that while `holding(pattern)` the first call whose path matches waits
    until the block ends: the review app's script run stops there, at a known point."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._pattern: re.Pattern[str] | None = None
        self._held = asyncio.Event()
        self._go = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def relay(self, request: Request) -> Response:
        self._loop = asyncio.get_running_loop()
        if self._pattern is not None and self._pattern.search(request.url.path):
            self._pattern = None
            self._held.set()
            await self._go.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as upstream:
            query = f"?{request.url.query}" if request.url.query else ""
            answer = await upstream.request(request.method, request.url.path + query,
                                            headers=headers, content=await request.body())
        return Response(answer.content, answer.status_code,
                        {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS})

    @contextmanager
    def holding(self, pattern: str) -> Iterator[Any]:
        """Hold the next call whose path matches `pattern` until the block ends; the block
        gets a function that waits until such a call is being held."""
        self._held.clear()
        self._go.clear()
        self._pattern = re.compile(pattern)

        def wait_held() -> None:
            deadline = time.monotonic() + 20
            while not self._held.is_set():
                assert time.monotonic() < deadline, f"no call to {pattern} came"
                time.sleep(0.05)
        try:
            yield wait_held
        finally:
            self._pattern = None
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._go.set)


@contextmanager
def api_gate(upstream: str) -> Iterator[tuple[ApiGate, str]]:
    """An `ApiGate` in front of `upstream`, and its URL (give that to `review_app(api=...)`)."""
    gate = ApiGate(upstream)
    app = Starlette(routes=[Route("/{path:path}", gate.relay,
                                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
    with serve_app(app) as url:
        yield gate, url


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any) -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)  # a first page load on a busy machine takes seconds
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


APP_IDLE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning';
}"""
"""Streamlit's own mark on the app's root: its script run (the one a page load or an action
asked for) has ended, and all it drew is on the page."""


def app_idle(page: Any) -> None:
    """Wait until the app's script run has ended (not a fixed sleep)."""
    page.wait_for_function(APP_IDLE)


def sign_in(page: Any, url: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("Your name (recorded with every review)").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("signed in as")).to_be_visible()
    # the sign-in cookie is written by the page's script just after; a test that reloads or
    # opens another address right away would otherwise race it on a busy machine
    page.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')")
