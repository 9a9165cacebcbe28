"""The strata by each key's own usual rate (exporter/canary_strata.py, r14e HIGH 1-2, MED 3,
r14j HIGH 1): a quiet majority key holds nothing, many fresh keys weigh as one new app, and an
honest key rotation counts as a new app (slower, never wrong). Real proxy issuing keys, the
cycle's watch."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import CANARY
from tests.test_canary_strata import ALIAS, Deployment, until_decided

pytestmark = both_stores

ROTATION_MOST = 180
"""App requests to a good canary's promotion without the rotation (~1.3x the usual ~140)."""


def deployment_of(proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> Deployment:
    return Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY), tmp_path)


def test_a_quiet_history_majority_key_does_not_hold_a_good_canary(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """r14e HIGH 1: a key sends 150 one-token requests before the canary (most of the
    history), then 4 after the promotion. On main its 4 set the share-weighted scale and the
    app's requests counted almost nothing: a good canary undecided at 400 app requests. Now
    a key under its allowance cuts nobody: promoted as without it (~120)."""
    deployment = deployment_of(proxy_factory, tmp_path)
    app, quiet = deployment.client("app"), deployment.client("quiet")
    deployment.paced(app, 100)
    deployment.send(quiet, 150, max_tokens=1)
    deployment.open_canary()
    deployment.send(quiet, 4, max_tokens=1)
    step, sent = until_decided(deployment, lambda: deployment.paced(app, 10), 300)
    print(f"\nquiet majority key: {step.outcome} after {sent} app requests")
    assert step.outcome == "promoted", (sent, step.note)


def test_many_fresh_keys_weigh_as_one_new_app(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """r14e HIGH 2: 200 keys absent from the history send one cheap request each right after
    the promotion, then the canary fails 12% of the app's requests. On main each fresh key
    had a share of its own and they set the scale: promoted after 10 app requests. Now they
    share one allowance: rolled back."""
    deployment = deployment_of(proxy_factory, tmp_path)
    app = deployment.client("app")
    deployment.paced(app, 100)
    fresh = [deployment.client(f"fresh{n}") for n in range(200)]
    deployment.open_canary()

    def one(client: openai.OpenAI) -> None:
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, fresh))
    deployment.sent += len(fresh)
    deployment.proxy.upstream.state.model_error_rate[CANARY] = 0.12
    step, sent = until_decided(deployment, lambda: deployment.paced(app, 10), 300)
    print(f"\n200 fresh keys: {step.outcome} after {sent} app requests")
    assert step.outcome == "rolled_back", (sent, step.note)


@pytest.mark.parametrize("rotate", [False, True])
def test_an_honest_key_rotation_is_decided_later_never_wrongly(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path, rotate: bool) -> None:
    """Apps at 70/30 (a seeded mix), a good canary, the big app's key replaced when the canary
    opens (`rotate`). The new key counts as a new app (NEW_KEYS_PART of the route's rate,
    never the silent old key's allowance: r14j HIGH 1), so the canary is promoted later than
    without the rotation (within ROTATION_MOST), but promoted."""
    deployment = deployment_of(proxy_factory, tmp_path)
    apps = [deployment.client("big"), deployment.client("small")]
    mix = random.Random(7)

    def batch(count: int) -> int:
        picks = mix.choices([0, 1], weights=[70, 30], k=count)
        for app in (0, 1):
            if picks.count(app):
                deployment.paced(apps[app], picks.count(app))
        return count
    batch(100)
    deployment.open_canary()
    if rotate:
        apps[0] = deployment.client("big-rotated")
    step, sent = until_decided(deployment, lambda: batch(10), 800)
    print(f"\nkey rotation {rotate}: {step.outcome} after {sent} app requests")
    assert step.outcome == "promoted", (sent, step.note)
    assert rotate or sent <= ROTATION_MOST, (sent, step.note)
