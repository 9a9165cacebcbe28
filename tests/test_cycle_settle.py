"""A cycle never leaves a canary open and unwatched (r14b #2).

The watch step failing `max_step_attempts` times (the admin API's health endpoint down) fails
the run with its canary still on the route: the run says so (naming the route), and the next
run (or `cycle --every` watcher) watches that canary first, enforcing `max_hours`, before it
trains or evaluates anything new. The health outage is a real one: the cycle talks to the proxy
through a loopback relay that answers 503 on the health endpoint while `down` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.cycle import run_cycle
from exporter.cycle_steps import current_model
from exporter.cycle_watch import watch_canary
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_cycle import ALIAS, CURRENT, config, loop, the_current_model_is_worse  # noqa: F401
from tuneloop.client import AdminClient

MAX_HOURS = 0.003  # 10.8 s: long enough for a loaded machine's first look, short for a test


class Relay:
    """Forwards the admin API's JSON calls to the proxy; while `down`, the route health
    answers 503."""

    def __init__(self, target: str):
        self.down = False
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if relay.down and self.path.split("?")[0].endswith("/health"):
                    body = b'{"error":{"message":"health down","type":"server_error","code":null}}'
                    self.send_response(503)
                else:
                    length = int(self.headers.get("content-length") or 0)
                    sent = httpx.request(self.command, target + self.path,
                                         content=self.rfile.read(length) if length else None,
                                         headers={k: v for k, v in self.headers.items()
                                                  if k.lower() not in ("host", "content-length")},
                                         timeout=60)
                    body = sent.content
                    self.send_response(sent.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def relay(loop: ProxyServer) -> Iterator[Relay]:  # noqa: F811
    relay = Relay(loop.url)
    yield relay
    relay.server.shutdown()
    relay.server.server_close()


def targets(proxy: ProxyServer) -> dict[str, float]:
    return {t["model"]: float(t.get("weight", 100)) for t in
            proxy.admin().routes()[ALIAS]["targets"]}


def fail_the_watch(proxy: ProxyServer, relay: Relay, tmp_path: Path, **canary: Any
                   ) -> tuple[Any, AdminClient, str, datetime]:
    the_current_model_is_worse(proxy)
    canary = {"percent": 10, "min_requests": 100, **canary}
    cfg = config(tmp_path, canary=canary)
    client = proxy.admin()
    first = run_cycle(client, cfg, api_key=UPSTREAM_KEY)
    assert first.status == "active" and first.run["step"] == "watch", first.message
    model = first.run["state"]["fine_tuned_model"]
    opened = datetime.fromisoformat(first.run["state"]["promoted_at"])
    relay.down = True
    relayed = AdminClient(relay.url, ADMIN_TOKEN)  # the watch steps go through the relay
    for _ in range(cfg.max_step_attempts):
        outcome = run_cycle(relayed, cfg, api_key=UPSTREAM_KEY)
    relayed.close()
    assert outcome.status == "failed", outcome.message
    # loud: names the route and the open canary
    percent = float(canary["percent"])
    assert f"route {ALIAS!r} stays open at {percent}%" in outcome.message, outcome.message
    assert "NOT watched" in outcome.message
    assert targets(proxy)[model] == percent
    relay.down = False
    return cfg, client, model, opened


def wait_past_max_hours(opened: datetime) -> None:
    """Sleep until the canary opened at `opened` is older than MAX_HOURS (a loaded machine
    can spend seconds before the first look: a short fixed max_hours expired it too early)."""
    left = (opened + timedelta(hours=MAX_HOURS) - datetime.now(UTC)).total_seconds()
    time.sleep(max(left, 0) + 0.3)


@pytest.mark.parametrize("percent", [10, 50, 60])
def test_a_run_settles_the_canary_a_failed_watch_left_open_before_training_again(
        loop: ProxyServer, relay: Relay, tmp_path: Path, percent: int) -> None:  # noqa: F811
    # r14c #1: at 50% or more the canary is as heavy as the current model (or heavier); it is
    # found from the run's recorded state, and the current model is the one the run replaced
    cfg, client, model, opened = fail_the_watch(loop, relay, tmp_path, max_hours=MAX_HOURS,
                                                percent=percent)
    assert current_model(client, cfg) == CURRENT
    jobs = len(loop.upstream.state.jobs)
    # new data arrives: on main the next run trained a second model and the canary stayed
    chat = loop.openai()
    for i in range(30, 45):
        chat.chat.completions.create(model=CURRENT,
                                     messages=[{"role": "user", "content": f"Where is order {i}?"}])
    loop.wait_logged(45)
    loop.admin().bulk_review("approve", reviewer="rita", filter={"review": "pending"})
    wait_past_max_hours(opened)
    said: list[str] = []
    settled = run_cycle(client, cfg, api_key=UPSTREAM_KEY, say=said.append, force=True)
    assert settled.status == "finished" and settled.run["outcome"] == "rolled_back", \
        settled.message
    # r14c #4: --force does not apply to a run settling a canary, and says so
    assert "--force ignored" in settled.message and "settles the canary" in settled.message
    assert "re-opens it once" in settled.message  # r14c #5: undecided, never found worse
    assert settled.run["state"]["settles"] and any("watching it before anything new" in s
                                                   for s in said), said
    assert len(loop.upstream.state.jobs) == jobs  # nothing trained while it was open
    assert model not in targets(loop) and targets(loop) == {CURRENT: 100.0}
    after = run_cycle(client, cfg, api_key=UPSTREAM_KEY)  # now the new data is trained on
    assert "settles" not in after.run["state"]
    assert len(loop.upstream.state.jobs) == jobs + 1


@pytest.mark.parametrize("percent", [10, 60])
def test_the_watcher_settles_a_canary_a_failed_run_left_open(
        loop: ProxyServer, relay: Relay, tmp_path: Path, percent: int) -> None:  # noqa: F811
    cfg, client, model, opened = fail_the_watch(loop, relay, tmp_path, max_hours=MAX_HOURS,
                                                percent=percent)
    wait_past_max_hours(opened)
    outcome = watch_canary(client, cfg, api_key=UPSTREAM_KEY)
    assert outcome.status == "finished" and outcome.run["outcome"] == "rolled_back", \
        outcome.message
    assert model not in targets(loop)
    assert watch_canary(client, cfg, api_key=UPSTREAM_KEY).status == "idle"
