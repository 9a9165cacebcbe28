"""The strata when some history key is silent during the canary, and when an app's users come
back (exporter/canary_strata.py, outside review r14j HIGH 1, MED 2). Real proxy issuing keys,
the cycle's watch; the apps send at their usual rate before and during the canary."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import CANARY
from tests.test_canary_strata import ALIAS, PACE, Deployment, until_decided

pytestmark = both_stores

APP_PART = 0.3
"""The app's part of the route's usual `PACE` (the batch key's the rest)."""
CHEAP = 4
"""The fresh key's one-token requests per app request: under twice the batch key's usual
rate (what it inherited before), so each counted in full."""


class Clock:
    """Sleeps so that a client's requests keep to `rate` a second since the first."""

    def __init__(self, rate: float) -> None:
        self.rate, self.start, self.done = rate, time.monotonic(), 0

    def keep(self, count: int) -> int:
        self.done += count
        time.sleep(max(0.0, self.start + self.done / self.rate - time.monotonic()))
        return count


def test_a_fresh_key_does_not_inherit_a_silent_keys_allowance(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """r14j HIGH 1: the history is an app key (30%) and a batch key (70%) silent during the
    canary; a key absent from the history sends 4 one-token requests per app request from the
    promotion on, and the canary fails 12% of the app's requests. The fresh keys shared the
    silent keys' allowances: every cheap request counted in full and the canary was promoted
    (here after 60 app requests at 50%; the review, with 5 per app request: after 30 at 90%,
    40 at 50%). Now they share only NEW_KEYS_PART of the route's rate: rolled back (here after
    about 160)."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path, percent=50)
    app, batch = deployment.client("app"), deployment.client("batch")
    for _ in range(2):  # batches as large as the canary's: the same throughput on a busy host
        deployment.paced(app, 15)
        deployment.paced(batch, 35)
    deployment.open_canary()
    fresh = deployment.client("fresh")
    state, clock = deployment.proxy.upstream.state, Clock(PACE * APP_PART)

    def batch_of_app() -> int:
        state.model_error_rate[CANARY] = 0.12
        deployment.send(app, 20)
        state.model_error_rate.pop(CANARY, None)
        deployment.send(fresh, 20 * CHEAP, max_tokens=1)
        return clock.keep(20)
    step, sent = until_decided(deployment, batch_of_app, 300)
    canary = step.detail["canary"]
    print(f"\n50% canary, batch key silent, fresh key x{CHEAP}: {step.outcome} after "
          f"{sent} app requests (weighed {canary.get('weighed_requests')} of "
          f"{canary.get('unstratified_requests')})")
    assert step.outcome == "rolled_back", (sent, step.note)
    assert canary["unstratified_requests"] > canary["weighed_requests"], canary


USERS, ROUNDS = 60, 20


def test_returning_sticky_users_keep_their_apps_full_rate(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """r14j MED 2: an app's 60 sticky users each sent 20 requests in the history, a monitor key
    one request a round. A key's rate was read from its judged requests weighed per sticky
    user (5 per user over the whole window: a quarter of the app's real rate), so with the
    monitor on the route the app was cut to half its rate during the canary (a good 50%
    canary: weighed 104 of 159, promoted after 360 app requests; 240 without the monitor).
    Now the rate is its judged requests each once: the app is not cut at all."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path, percent=50)
    app, monitor = deployment.client("app"), deployment.client("monitor")
    rounds = 0

    def one_round() -> int:
        nonlocal rounds

        def one(user: int) -> None:
            with contextlib.suppress(openai.InternalServerError):
                app.chat.completions.create(
                    model=ALIAS, user=f"user-{user}",
                    messages=[{"role": "user", "content": f"round {rounds}?"}])
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(USERS)))
        deployment.sent += USERS
        deployment.send(monitor, 1, max_tokens=1)
        rounds += 1
        return clock.keep(USERS)
    clock = Clock(PACE)
    for _ in range(ROUNDS):
        one_round()
    deployment.open_canary()
    clock = Clock(PACE)
    step, sent = until_decided(deployment, one_round, ROUNDS * USERS)
    canary = step.detail["canary"]
    print(f"\nsticky users + monitor: {step.outcome} after {sent} app requests (weighed "
          f"{canary.get('weighed_requests')} of {canary.get('unstratified_requests')})")
    assert step.outcome == "promoted", (sent, step.note)
    assert canary["weighed_requests"] == pytest.approx(canary["unstratified_requests"]), canary


def test_a_route_whose_only_live_key_is_rotated_is_judged_unstratified(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """The app owns the whole history and rotates its key when the canary opens: the new key
    is the only one over both arms, so nothing is weighed (a good canary promoted as without
    the rotation), though the new key is absent from the history."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path)
    deployment.paced(deployment.client("app"), 100)
    deployment.open_canary()
    rotated = deployment.client("app-rotated")
    step, sent = until_decided(deployment, lambda: deployment.paced(rotated, 10), 400)
    print(f"\none key, rotated: {step.outcome} after {sent} app requests")
    assert step.outcome == "promoted", (sent, step.note)
    assert "unstratified_requests" not in step.detail["canary"], step.detail["canary"]
