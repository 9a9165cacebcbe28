"""One client key's cheap requests must not decide a canary (issue 14, r14d HIGH 2): each key's
requests count at most its own usual rate before the canary (exporter/canary_strata.py), on a
real proxy issuing keys, judged by the cycle's watch. The apps send at a steady `PACE` before
and during the canary (a usual rate to be measured against)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from exporter.cycle_canary import watch_step
from exporter.cycle_steps import StepContext, StepResult
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import CANARY, STABLE
from tests.test_cycle import ALIAS, config

pytestmark = both_stores

PACE = 20.0
"""The apps' requests per second, before and during the canary."""

DEFAULTS = {"percent": 90, "min_requests": 100, "min_feedback": 10,
            "bad_error_rate_increase": 0.05}


class Deployment:
    """A proxy issuing keys, the alias on STABLE, and clients with keys of their own."""

    def __init__(self, proxy: ProxyServer, tmp_path: Path, **canary: Any) -> None:
        self.proxy, self.admin, self.sent = proxy, proxy.admin(), 0
        self.admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
        self.cfg = config(tmp_path, canary={**DEFAULTS, **canary})
        self.state: dict[str, Any] = {}
        self.clock: tuple[float, int] | None = None
        self.keys: dict[str, str] = {}
        self.step_s = 0.0
        self.counted: int | None = None
        """App requests sent during the canary on a count-based clock, `step_s` seconds each
        (`count_clock`); None: the watch reads the machine's clock."""

    def client(self, name: str) -> openai.OpenAI:
        """A client with the key made for `name` (made at the first call)."""
        if name not in self.keys:
            self.keys[name] = self.admin.create_key(name)["key"]
        return self.proxy.openai(api_key=self.keys[name]).with_options(max_retries=0)

    def restarted(self, proxy: ProxyServer) -> None:
        """Go on at `proxy`, a restart on the same store (`client` again for its clients)."""
        self.proxy, self.admin = proxy, proxy.admin()

    def send(self, client: openai.OpenAI, count: int, **body: Any) -> None:
        def one(n: int) -> None:
            with contextlib.suppress(openai.InternalServerError):
                client.chat.completions.create(
                    model=ALIAS, messages=[{"role": "user", "content": f"order {n}?"}], **body)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(count)))
        self.sent += count
        self.proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                            lambda r: r[0][0] >= self.sent)

    def paced(self, client: openai.OpenAI, count: int) -> int:
        """Send `count` as the apps do: at `PACE` on average since the first paced request
        (catching up after a burst or a watch); how many were sent."""
        start, done = self.clock or (time.monotonic(), 0)
        self.send(client, count)
        self.clock = (start, done + count)
        time.sleep(max(0.0, start + (done + count) / PACE - time.monotonic()))
        return count

    def open_canary(self) -> None:
        promoted = self.admin.promote(ALIAS, CANARY, canary=self.cfg.canary.percent)
        self.state = {"fine_tuned_model": CANARY, "promoted_at": promoted["changed_at"],
                      "stable": STABLE}

    def count_clock(self, step_s: float) -> None:
        """From now on the watch judges at the canary's opening plus `step_s` per app
        request counted in `counted` (tests/canary_clock.py)."""
        self.step_s, self.counted = step_s, 0

    def watch(self) -> StepResult:
        ctx = StepContext(self.admin, self.cfg, {"state": self.state}, "test", None)
        if self.counted is not None:
            moment = datetime.fromisoformat(self.state["promoted_at"]) \
                + timedelta(seconds=self.counted * self.step_s)
            ctx.now = lambda: moment
        return watch_step(ctx)


def until_decided(deployment: Deployment, batch: Callable[[], int], most: int
                  ) -> tuple[StepResult, int]:
    """Send `batch()` (it says how many app requests it sent) and watch, until decided or
    `most` app requests; the last step and the app requests sent."""
    sent = 0
    while True:
        sent += batch()
        step = deployment.watch()
        if step.outcome is not None or sent >= most:
            return step, sent


@pytest.mark.parametrize(("percent", "cheap"), [(90, 150), (50, 200)])
def test_one_keys_cheap_burst_does_not_get_a_bad_canary_promoted(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path, percent: int,
        cheap: int) -> None:
    """r14d HIGH 2: right after the promotion another key sends 150 (200) one-token requests
    (the canary answers them), then the canary fails 12% of the app's requests. On main every
    request counted once: the burst filled `min_requests` and the error test, and the canary
    was promoted after 10 app requests (90% and 50%). Now the burst's key, new beside the
    app's (the only key before the canary), counts at most NEW_KEYS_PART of the app's
    usual rate: the canary is rolled back, as it is without the burst."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path, percent=percent)
    app, burst = deployment.client("app"), deployment.client("cheap")
    deployment.paced(app, 100)
    deployment.open_canary()
    deployment.send(burst, cheap, max_tokens=1)
    deployment.proxy.upstream.state.model_error_rate[CANARY] = 0.12
    step, sent = until_decided(deployment, lambda: deployment.paced(app, 10), 300)
    print(f"\n{percent}% canary, burst {cheap}: {step.outcome} after {sent} app requests")
    assert step.outcome == "rolled_back", (sent, step.note)
    canary = step.detail["canary"]
    assert canary["unstratified_requests"] > canary["weighed_requests"], canary


@pytest.mark.parametrize("issued", [True, False])
def test_one_key_gives_exactly_the_unstratified_numbers(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path, issued: bool) -> None:
    """A guard (as on main): one issued app key, or no issued keys (the anonymous client),
    before and during the canary: nothing is weighed."""
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY) if issued \
        else proxy_factory()
    deployment = Deployment(proxy, tmp_path, min_requests=30)
    app = deployment.client("app") if issued else proxy.openai().with_options(max_retries=0)
    deployment.send(app, 40)
    deployment.open_canary()
    deployment.send(app, 40)
    step = deployment.watch()
    health = deployment.admin.route_health(ALIAS, since=deployment.state["promoted_at"])
    rows = {row["target"]: row for row in health["targets"]}
    [errors, _] = step.detail["verdict"]["tests"][:2]
    assert errors["canary_n"] == rows[CANARY]["weighed_requests"] > 0
    assert "unstratified_requests" not in step.detail["canary"]
