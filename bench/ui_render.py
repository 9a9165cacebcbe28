"""The review app as a reviewer meets it: key press → next item in headless Chromium, and
screenshots of every page at 1440×900.

    PYTHONPATH=$PWD python bench/ui_render.py [--db PATH] [--rows N] [--runs N] [--key a]
    PYTHONPATH=$PWD python bench/ui_render.py --screenshots docs/screenshots

The first form serves a DuckDB file (seeded by `bench/review_queries.py`'s generator with
`--rows` interactions when PATH does not exist yet; default 1,000,000) with the real proxy,
starts the app with `tuneloop ui`, signs in with Chromium (Playwright, Debian's
/usr/bin/chromium) and presses `--key` (default `a`, approve) `--runs` times on the Queue page.
Each sample is the time from the key press until the next item's header is shown and no
element of the page is stale any more; it prints the median and the max.
The second form seeds `bench/ui_examples.py` (varied, hostile, right-to-left items) instead
and saves one PNG per page. `queue_page_render_ms` is the AppTest timing used by
`review_queries.py --ui`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.app import create_app
from tuneloop.config import Settings

TOKEN = "tlr-bench-reviewer-token"
PASSWORD = "bench-password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1440, "height": 900}
ROOT = Path(__file__).resolve().parent.parent
# the next item is on screen: a new id in the header, and nothing left over from the last run
SETTLED = """old => {
  const id = document.querySelector('.tl-id');
  return id !== null && id.textContent !== old
      && document.querySelector('[data-stale="true"]') === null
      && document.querySelector('[data-testid="stStatusWidget"]') === null;
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_proxy(db_path: Path) -> Iterator[str]:
    """The real proxy (admin API) on loopback, in a thread; yields its URL."""
    port = _free_port()
    spool = Path(tempfile.mkdtemp(prefix="tuneloop-bench-spool-"))
    settings = Settings(db=db_path, spool_dir=spool, admin_token="tla-bench-admin-token",
                        reviewer_token=TOKEN, upstream="http://127.0.0.1:9/v1")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_app(api: str) -> Iterator[str]:
    """`tuneloop ui` against `api`, as its own process; yields its URL."""
    port = _free_port()
    # the app keeps its sign-in secret beside TUNELOOP_DB: a temporary place, not the checkout
    scratch = Path(tempfile.mkdtemp(prefix="tuneloop-bench-ui-"))
    env = {**os.environ, "TUNELOOP_REVIEWER_TOKEN": TOKEN, "TUNELOOP_UI_PASSWORD": PASSWORD,
           "PYTHONPATH": str(ROOT), "TUNELOOP_DB": str(scratch / "unused.duckdb")}
    env.pop("TUNELOOP_ADMIN_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "ui", "--port", str(port), "--api", api],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/_stcore/health", timeout=1).text == "ok":
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the review app did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def sign_in(page: Any, url: str) -> None:
    page.goto(url)
    page.get_by_label("Your name (recorded with every review)").fill("bench")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function(SETTLED, arg="", timeout=120_000)


def shown_id(page: Any) -> str:
    return str(page.evaluate("() => document.querySelector('.tl-id').textContent"))


# measured inside the page: from the keydown event to the first animation frame in which the
# next item's header is shown and no element is stale (no Playwright round trip counted)
ARM = """key => new Promise(armed => {
  const old = document.querySelector('.tl-id')?.textContent;
  window.__tlSample = new Promise(done => {
    let pressed = null;
    window.addEventListener('keydown', e => { if (e.key === key) pressed = e.timeStamp; },
                            {capture: true, once: true});
    const check = () => {
      const id = document.querySelector('.tl-id');
      if (pressed !== null && id !== null && id.textContent !== old
          && document.querySelector('[data-stale="true"]') === null
          && document.querySelector('[data-testid="stStatusWidget"]') === null) {
        done(performance.now() - pressed);
      } else {
        requestAnimationFrame(check);
      }
    };
    requestAnimationFrame(check);
  });
  armed(true);
})"""


def key_to_next_item(page: Any, key: str, runs: int) -> list[float]:
    """Milliseconds from each key press until the next item is settled on screen."""
    samples = []
    for _ in range(runs):
        page.mouse.click(5, 450)  # focus the page, not a text box
        page.evaluate(ARM, key)
        page.keyboard.press(key)
        samples.append(float(page.evaluate("() => window.__tlSample", )))
        page.wait_for_timeout(150)  # a reviewer reads a little before the next key
    return samples


def browser_session(url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            sign_in(page, url)
            yield page
        finally:
            browser.close()


def measure(db_path: Path, runs: int, key: str) -> tuple[float, float, list[float]]:
    with serve_proxy(db_path) as api, serve_app(api) as url:
        session = browser_session(url)
        page = next(session)
        key_to_next_item(page, key, 2)  # warm-up: caches, first renders
        samples = key_to_next_item(page, key, runs)
        session.close()
    return statistics.median(samples), max(samples), samples


# newest first: Arabic, Hebrew, tool call, a long answer, hostile HTML, code and a table (the
# upstream error is left out of the pending queue: the Item page shows it)
SHOWN_ITEMS = ((0, "three-turns"), (1, "six-turns"), (1, "cut-answer"), (1, "arabic"),
               (2, "tool-call"), (3, "code-table"))
ITEM_SHOTS = ("three-turns", "six-turns")  # also shown on the Item page
PAGES = ("Queue", "Browse", "Item", "Stats", "Datasets", "Jobs", "Routes")
SETTLED_PAGE = """() => document.querySelector('[data-stale="true"]') === null
    && document.querySelector('[data-testid="stStatusWidget"]') === null"""


def open_page(page: Any, title: str, item_id: str) -> None:
    """Go to a page through the sidebar, as a reviewer does (a new URL is a new session)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.wait_for_timeout(500)
    page.wait_for_function(SETTLED_PAGE)
    if title == "Item":
        box = page.get_by_label("Interaction id")
        box.fill(item_id)
        box.press("Enter")
        page.wait_for_function(SETTLED, arg="")
    page.wait_for_timeout(900)  # the data grid draws its canvas after the elements settle


def screenshots(folder: Path) -> list[Path]:
    """One PNG per page of the app, on the example items, at 1440×900."""
    from bench.ui_examples import seed_examples

    folder.mkdir(parents=True, exist_ok=True)
    db_path = Path(tempfile.mkdtemp(prefix="tuneloop-shots-")) / "examples.duckdb"
    seed_examples(db_path)
    saved = []
    ids: dict[str, str] = {}
    with serve_proxy(db_path) as api, serve_app(api) as url:
        session = browser_session(url)
        page = next(session)
        for skips, name in SHOWN_ITEMS:  # newest first: Arabic, Hebrew, tool call, error, …
            for _ in range(skips):
                old = shown_id(page)
                page.mouse.click(5, 450)
                page.keyboard.press("j")
                page.wait_for_function(SETTLED, arg=old)
            page.wait_for_timeout(300)
            ids[name] = shown_id(page)
            path = folder / f"queue-{name}.png"
            page.screenshot(path=str(path))
            saved.append(path)
        from tuneloop.client import AdminClient

        failed = AdminClient(api, TOKEN).interactions(has_error=True, limit=1)["items"]
        item_id = failed[0]["id"] if failed else shown_id(page)
        for title in PAGES[1:]:
            open_page(page, title, item_id)
            path = folder / f"{title.lower()}.png"
            page.screenshot(path=str(path))
            saved.append(path)
        for name in ITEM_SHOTS:
            open_page(page, "Item", ids[name])
            path = folder / f"item-{name}.png"
            page.screenshot(path=str(path))
            saved.append(path)
        session.close()
    return saved


def seed_bench_file(path: Path, rows: int) -> None:
    import numpy as np

    from bench.review_queries import seed, seed_reviews
    from storage.db import connect
    from storage.migrations import migrate

    con = connect(path)
    try:
        migrate(con)
        rng = np.random.default_rng(42)
        world = seed(con, rows, rng)
        seed_reviews(con, world, rng)
        con.execute("CHECKPOINT")
    finally:
        con.close()


def queue_page_render_ms(db_path: Path, runs: int) -> tuple[float, float]:
    """The Queue page's script run with Streamlit's AppTest (no browser): median and p99."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with serve_proxy(db_path) as api:
        os.environ.update(TUNELOOP_API=api, TUNELOOP_REVIEWER_TOKEN=TOKEN,
                          TUNELOOP_UI_PASSWORD=PASSWORD)
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "curation_ui" / "app.py"), default_timeout=60).run()
        at.text_input[0].input("bench")
        at.text_input[1].input(PASSWORD)
        at.button[0].click().run()
        samples = []
        for _ in range(runs + 1):
            at.session_state["queue_item"] = None  # fetch the queue again, as a new item does
            started = time.perf_counter()
            at.run()
            samples.append((time.perf_counter() - started) * 1000)
            assert not at.exception, at.exception
        samples = sorted(samples[1:])
        return statistics.median(samples), samples[min(len(samples) - 1,
                                                       int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=None,
                        help="DuckDB file to serve (seeded here first when missing)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--key", default="a", help="the key pressed (a approve, j skip)")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="save a PNG of each page here instead of timing")
    args = parser.parse_args()
    if args.screenshots is not None:
        for path in screenshots(args.screenshots):
            print(path)
        return
    workdir = tempfile.TemporaryDirectory(prefix="tuneloop-ui-bench-")
    path = args.db or Path(workdir.name) / "bench.duckdb"
    if not path.exists():
        seed_bench_file(path, args.rows)
    median, worst, samples = measure(path, args.runs, args.key)
    print(f"key '{args.key}' → next item, Chromium 1440×900, {args.runs} presses: "
          f"median {median:.0f} ms, max {worst:.0f} ms")
    print("samples (ms): " + " ".join(f"{s:.0f}" for s in samples))
    workdir.cleanup()


if __name__ == "__main__":
    main()
