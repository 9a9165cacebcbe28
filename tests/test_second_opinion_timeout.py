"""A slow second opinion does not hold the app for the upstream's whole read timeout (outside
review #2): after `second_opinion_timeout_s` the primary's refusal stands, charged to nobody,
as when the second opinion fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from tests.conftest import ProxyServer

ALIAS = "support-bot"
STABLE, SLOW_CANARY = "stable-model", "slow-3000"  # the fake answers slow-N after N ms


def routes(proxy: ProxyServer) -> list[dict[str, Any]]:
    rows = proxy.wait_for(
        f"SELECT route ->> 'primary', route ->> 'second_opinion_status', status_code "
        f"FROM interactions WHERE model = '{ALIAS}'", lambda r: len(r) >= 12)
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
    health = {r["target"]: r for r in admin.route_health(
        ALIAS, since="2000-01-01T00:00:00Z")["targets"]}
    # charged to nobody: not the stable model's error, nor judged for it
    assert health[STABLE]["errors"] == 0
    assert health[STABLE]["unjudged_requests"] == len(stable_rows)
