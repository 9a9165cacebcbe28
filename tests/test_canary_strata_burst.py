"""A burst in the canary's history must not buy a key an allowance (issue 14, r14k MED 3): the
health's `judged_parts` (storage/route_health.py) and the strata cutting each part of a key's
history to a few of the route's usual parts (exporter/canary_bursts.py), on a real proxy
issuing keys, judged by the cycle's watch."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from storage.route_health import HISTORY_PARTS
from tests.canary_clock import STEP_S, restamp
from tests.conftest import (
    UPSTREAM_KEY,
    FakeUpstream,
    ProxyServer,
    both_stores,
    one_store,
    proxy_settings,
    serve_proxy,
)
from tests.test_canary_failures import CANARY
from tests.test_canary_strata import Deployment, until_decided
from tests.test_cycle import ALIAS

pytestmark = both_stores


def burst(deployment: Deployment, client: openai.OpenAI, count: int) -> None:
    """`count` one-token requests sent at once (16 at a time)."""
    def one(n: int) -> None:
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(
                model=ALIAS, messages=[{"role": "user", "content": f"order {n}?"}],
                max_tokens=1)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    deployment.sent += count
    deployment.proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                              lambda r: r[0][0] >= deployment.sent)


def test_judged_parts_spread_each_keys_judged_requests_over_the_window(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    """Each key's `judged_parts` add up to its `judged`, in `HISTORY_PARTS` equal parts of
    the window from its first row to `until`: a key that came later is in the later parts."""
    deployment = Deployment(proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY),
                            tmp_path)
    early, late = deployment.client("early"), deployment.client("late")
    deployment.send(early, 12)
    time.sleep(1.5)
    deployment.send(late, 20, max_tokens=1)
    time.sleep(0.2)
    until = datetime.now(UTC).isoformat()
    rows = deployment.admin.route_health(ALIAS, since="2000-01-01T00:00:00+00:00", until=until,
                                         history_baseline=True, by_key=True)["targets"]
    [row] = rows
    keys = row["by_key"]
    assert len(keys) == 2
    parts = {key: counts["judged_parts"] for key, counts in keys.items()}
    for key, counts in keys.items():
        assert len(parts[key]) == HISTORY_PARTS
        assert sum(parts[key]) == counts["judged"] > 0
    first, second = sorted(parts.values(), key=lambda p: min(n for n, c in enumerate(p) if c))
    assert sum(first) == 12 and sum(second) == 20
    assert first[0] > 0
    assert max(n for n, c in enumerate(first) if c) < min(n for n, c in enumerate(second) if c)
    # the canary's read (no `until`) carries them as well
    now = deployment.admin.route_health(ALIAS, since=rows[0]["first_at"], by_key=True)
    assert all(len(c["judged_parts"]) == HISTORY_PARTS
               for c in now["targets"][0]["by_key"].values())


@one_store
@pytest.mark.timeout(300)  # the watch's reads on a loaded machine: up to 400 app requests
@pytest.mark.parametrize("percent", [50, 90])
def test_a_burst_before_the_canary_buys_no_allowance(
        tmp_path: Path, fake_openai: FakeUpstream, store: str, percent: int) -> None:
    """r14k MED 3: the app sends 100 requests at its pace, then another key sends 250
    one-token requests at once (2.5 times the app's history) right before the canary, and 5
    per app request during it; the canary fails 12% of the app's requests. On main the key's
    allowance was its whole burst over the window: every cheap request counted and the bad
    canary was promoted after 45 (50%) and 25 (90%) app requests (r14k: 60 and 30). Now each
    part of its history counts at most `BURST_CAP` of the route's usual parts: the canary is
    rolled back (here after 100 and 50). On a count-based clock (tests/canary_clock.py): the
    app sends one request per `STEP_S` before and during the canary, the burst is at one
    instant, as a burst in one hour of a day is short beside the history."""
    settings = proxy_settings(tmp_path, fake_openai.base_url, db=store, issue_keys=True,
                              openai_api_key=UPSTREAM_KEY)
    with serve_proxy(settings) as url:
        deployment = Deployment(ProxyServer(url, settings, fake_openai), tmp_path,
                                percent=percent)
        deployment.send(deployment.client("app"), 100)
        burst(deployment, deployment.client("cheap"), 250)
        deployment.proxy.close()
    restamp(store, [(100, STEP_S), (250, 0.0)])
    with serve_proxy(settings) as url:
        deployment.restarted(ProxyServer(url, settings, fake_openai))
        app, cheap = deployment.client("app"), deployment.client("cheap")
        deployment.open_canary()
        deployment.count_clock(STEP_S)
        state = deployment.proxy.upstream.state

        def batch() -> int:
            state.model_error_rate[CANARY] = 0.12
            deployment.send(app, 5)
            state.model_error_rate.pop(CANARY, None)
            deployment.send(cheap, 25, max_tokens=1)
            deployment.counted = (deployment.counted or 0) + 5
            return 5

        step, sent = until_decided(deployment, batch, 400)
        deployment.proxy.close()
    canary = step.detail.get("canary", {})
    print(f"\n{percent}% canary, history burst 250: {step.outcome} after {sent} app requests "
          f"(canary weighed {canary.get('weighed_requests')}, unstratified "
          f"{canary.get('unstratified_requests')})")
    assert step.outcome == "rolled_back", (sent, step.note, canary)
