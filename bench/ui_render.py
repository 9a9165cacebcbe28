"""Time the Queue page of the review app against a real proxy serving a given DuckDB file.

Used by `review_queries.py --ui`. The proxy runs under uvicorn in a thread; the app runs with
Streamlit's AppTest (the page script, its admin API calls and its element tree; no browser).
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from proxy.app import create_app
from tuneloop.config import Settings

TOKEN = "tlr-bench-reviewer-token"
PASSWORD = "bench-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def queue_page_render_ms(db_path: Path, runs: int) -> tuple[float, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    port = _free_port()
    spool = Path(tempfile.mkdtemp(prefix="tuneloop-bench-spool-"))
    settings = Settings(db=db_path, spool_dir=spool, admin_token="tla-bench-admin-token",
                        reviewer_token=TOKEN, upstream="http://127.0.0.1:9/v1")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    os.environ.update(TUNELOOP_API=f"http://127.0.0.1:{port}", TUNELOOP_REVIEWER_TOKEN=TOKEN,
                      TUNELOOP_UI_PASSWORD=PASSWORD)
    st.cache_resource.clear()
    try:
        app = Path(__file__).resolve().parent.parent / "curation_ui" / "app.py"
        at = AppTest.from_file(str(app), default_timeout=60).run()
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
    finally:
        server.should_exit = True
        thread.join(timeout=30)
