"""A slow second opinion does not hold the app for the upstream's whole read timeout (outside
review #2): after `second_opinion_timeout_s` the primary's refusal stands for the app. The
second opinion goes on in the background and judges the row (issue 14): the canary answered,
so the stable model's refusal is its error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from tests.conftest import ProxyServer
from tests.test_canary_failures import health as settled_health

ALIAS = "support-bot"
STABLE, SLOW_CANARY = "stable-model", "slow-3000"  # the fake answers slow-N after N ms


def routes(proxy: ProxyServer) -> list[dict[str, Any]]:
    rows = proxy.wait_for(
        f"SELECT route ->> 'primary', route ->> 'second_opinion_status', status_code "
        f"FROM interactions WHERE model = '{ALIAS}' AND traffic = 'production'",
        lambda r: len(r) >= 12)
    return [{"primary": p, "second_opinion_status": s, "status": c} for p, s, c in rows]


def test_the_stable_models_refusal_stands_when_the_canary_is_slow_to_answer(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(second_opinion_timeout_s=0.3, read_timeout_s=10.0)
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, SLOW_CANARY, canary=10)
    proxy.upstream.state.fail_containing[STABLE] = 429  # the stable model is rate limited
    client = proxy.openai().with_options(max_retries=0)
    seen: list[str | int] = []
    for n in range(12):
        try:
            seen.append(client.chat.completions.create(
                model=ALIAS, user=f"user-{n}",
                messages=[{"role": "user", "content": "hi"}]).model)
        except openai.RateLimitError:
            seen.append(429)
    # main: the app waited 3 s on every stable-drawn request for the canary's answer
    assert 429 in seen, seen
    rows = routes(proxy)
    stable_rows = [r for r in rows if r["primary"] == STABLE]
    assert stable_rows and all(r["second_opinion_status"] == "timeout" and r["status"] == 429
                               for r in stable_rows), stable_rows
    health = settled_health(proxy, 12)
    # the canary answered in the background (after 3 s): the refusal was the stable's error
    assert health[STABLE]["errors"] == health[STABLE]["requests"] == len(stable_rows), health
