"""One client key's skipped background opinions weigh no more than its share of the canary's
evidence (r14c #1).

An app key hanging up on slow requests gets its share of background opinions
(`background_opinions_per_key`); its further hang-ups are skipped (`key_share_full`) and were
in the canary's `opinions_missing`, each counted as the canary's error for a promotion: one key
held a clean canary until `max_hours` rolled it back undecided. Each key's missing rows now
count at most as many as its own judged requests there, and at most `max_requests_per_user`
in all (`opinions_missing_weighed`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import openai

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests.conftest import UPSTREAM_KEY, ProxyServer, both_stores
from tests.test_canary_failures import ALIAS, CANARY, HI, STABLE, health

CFG = CanaryConfig(min_requests=50)


def row(target: str, requests: int, errors: int, missing: int,
        weighed: float) -> dict[str, Any]:
    return {"target": target, "requests": requests, "errors": errors,
            "weighed_requests": float(requests), "weighed_errors": float(errors),
            "votes": 0.0, "down_votes": 0.0, "opinions_missing": missing,
            "opinions_missing_weighed": weighed}


def test_the_hold_counts_missing_rows_as_weighed_per_key() -> None:
    stable = row(STABLE, 400, 0, 0, 0.0)
    one_keys = judge_canary(row(CANARY, 400, 0, 40, 0.0), stable, CFG, timedelta(hours=1))
    assert one_keys.verdict == "promote", one_keys.reasons
    beside_its_own = judge_canary(row(CANARY, 400, 0, 40, 40.0), stable, CFG,
                                  timedelta(hours=1))
    assert beside_its_own.verdict == "continue", beside_its_own.reasons


def canary_with_two_keys(proxy_factory: Callable[..., ProxyServer]
                         ) -> tuple[ProxyServer, openai.OpenAI, str]:
    """A 50% canary on a proxy issuing keys (budget 4, a key's share 1), the app's client and
    a second key (the one hanging up)."""
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY,
                          background_opinions_max=4, background_opinions_per_key=1,
                          hangup_probe_min_s=0.2)
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    app = proxy.openai(api_key=admin.create_key("app")["key"], timeout=10)
    return proxy, app, admin.create_key("hanger")["key"]


@both_stores
def test_one_keys_skipped_hang_ups_do_not_hold_a_clean_canary(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """Both arms answer in 1.5 s; a second key hangs up after 0.4 s from 6 threads at once, so
    most of its hang-ups are beyond its share of 1 (budget 4). Its rows are all unjudged (the
    other arm did not answer in 0.4 s either): it has no evidence, so its missing rows weigh
    nothing, and the app's clean canary is promoted."""
    proxy, app, key = canary_with_two_keys(proxy_factory)
    hanger = proxy.openai(api_key=key, timeout=0.4).with_options(max_retries=0)
    sent = [0]
    lock = threading.Lock()

    def hang_up(_: int) -> None:
        with contextlib.suppress(openai.APIError):
            hanger.chat.completions.create(model=ALIAS, messages=HI,
                                           extra_headers={"x-fake-delay-ms": "1500"})
        with lock:
            sent[0] += 1

    with ThreadPoolExecutor(6) as hangers, ThreadPoolExecutor(4) as apps:
        hung = hangers.map(hang_up, range(30))
        list(apps.map(lambda _: app.chat.completions.create(model=ALIAS, messages=HI),
                      range(160)))
        list(hung)
    rows = health(proxy, 160 + sent[0])
    skipped = proxy.sql("SELECT count(*) FROM interactions WHERE traffic = 'production' AND "
                        f"route ->> 'primary' = '{CANARY}' AND "
                        "route ->> 'late_opinion' = 'key_share_full'")[0][0]
    assert skipped > 0  # the case this is about: the key's share was full
    assert rows[CANARY]["opinions_missing"] >= skipped
    assert rows[CANARY]["opinions_missing_weighed"] == 0
    verdict = judge_canary(rows[CANARY], rows[STABLE], CFG, timedelta(hours=1))
    assert verdict.verdict == "promote", verdict.reasons


@both_stores
def test_a_key_mixing_successes_into_its_hang_ups_does_not_hold_a_clean_canary(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """r14d HIGH 1: a key sending a quick request after each hang-up raises its judged
    requests, which let each of its skipped hang-ups count again. A key's missing rows now
    weigh at most `max_requests_per_user` in all, like its second opinions: 5 such rows hold
    a clean canary until about 240 requests on each arm, where before every one of its ~40
    skipped hang-ups beside its ~24 quick ones held it."""
    proxy, app, key = canary_with_two_keys(proxy_factory)
    hanger = proxy.openai(api_key=key, timeout=0.4).with_options(max_retries=0)
    quick = proxy.openai(api_key=key, timeout=10)

    def hang_up_then_succeed(_: int) -> None:
        with contextlib.suppress(openai.APIError):
            hanger.chat.completions.create(model=ALIAS, messages=HI,
                                           extra_headers={"x-fake-delay-ms": "1500"})
        quick.chat.completions.create(model=ALIAS, messages=HI)

    with ThreadPoolExecutor(6) as hangers, ThreadPoolExecutor(4) as apps:
        hung = hangers.map(hang_up_then_succeed, range(48))
        list(apps.map(lambda _: app.chat.completions.create(model=ALIAS, messages=HI),
                      range(520)))
        list(hung)
    rows = health(proxy, 520 + 2 * 48)
    assert rows[CANARY]["opinions_missing"] > 5  # the case: more skipped than one key's weight
    assert rows[CANARY]["opinions_missing_weighed"] <= 5
    verdict = judge_canary(rows[CANARY], rows[STABLE], CFG, timedelta(hours=1))
    assert verdict.verdict == "promote", verdict.reasons
