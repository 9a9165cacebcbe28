"""A canary is not promoted while failures that wait on a background second opinion could
change the verdict (r14 #2).

A failure judged only by a background second opinion (proxy/background_opinion.py) is unjudged
when the opinion was skipped (`background_opinions_max` in flight) or has not reported. The
canary's successes are always judged, so dropping those rows biased its error rate down: a 15%
canary read as 7% beside a 4% stable and was promoted. Health now counts them
(`opinions_missing`) and a promotion must hold with each counted as the canary's error; a
rollback is decided without them (an app key filling the budget must not roll a canary back)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import openai

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests.conftest import ProxyServer
from tests.test_canary_failures import ALIAS, CANARY, HI, health

CFG = CanaryConfig(min_requests=20)


def row(target: str, requests: int, errors: int, missing: int = 0) -> dict[str, Any]:
    return {"target": target, "requests": requests, "errors": errors,
            "weighed_requests": float(requests), "weighed_errors": float(errors),
            "votes": 0.0, "down_votes": 0.0, "opinions_missing": missing}


def test_a_healthy_canary_is_promoted_when_no_opinion_is_missing() -> None:
    verdict = judge_canary(row(CANARY, 400, 8), row("stable", 800, 16), CFG, timedelta(hours=1))
    assert verdict.verdict == "promote", verdict


def test_missing_opinions_that_could_hide_failures_hold_the_promotion() -> None:
    verdict = judge_canary(row(CANARY, 400, 8, missing=40), row("stable", 800, 16), CFG,
                           timedelta(hours=1))
    assert verdict.verdict == "continue", verdict
    assert any("40 of its failures or hang-ups still wait on a background second opinion"
               in reason for reason in verdict.reasons), verdict.reasons


def test_a_few_missing_opinions_that_change_nothing_do_not_hold_it() -> None:
    verdict = judge_canary(row(CANARY, 4000, 80, missing=1), row("stable", 8000, 160), CFG,
                           timedelta(hours=1))
    assert verdict.verdict == "promote", verdict


def test_missing_opinions_never_roll_a_canary_back() -> None:
    # an app key filling the budget leaves rows unjudged: the verdict on the rest stands
    even = judge_canary(row(CANARY, 400, 8, missing=400), row("stable", 800, 16), CFG,
                        timedelta(hours=1))
    assert even.verdict == "continue", even


def test_health_counts_failures_whose_background_opinion_was_skipped(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(second_opinion_timeout_s=0.1, background_opinions_max=1)
    slow = "slow-1500"
    proxy.upstream.state.model_error_rate[CANARY] = 1.0  # every canary answer is a 500
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": slow}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    client = proxy.openai().with_options(max_retries=0)

    def ask(n: int) -> None:
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(model=ALIAS, user=f"u-{n}", messages=HI)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ask, range(24)))
    rows = health(proxy, 24)
    skipped = proxy.sql("SELECT count(*) FROM interactions WHERE traffic = 'production' "
                        "AND route ->> 'late_opinion' = 'budget_full' "
                        f"AND route ->> 'primary' = '{CANARY}'")[0][0]
    assert skipped > 0  # the budget of 1 was full for some of the canary's 500s
    assert rows[CANARY]["opinions_missing"] == skipped
    assert rows[slow]["opinions_missing"] == 0
