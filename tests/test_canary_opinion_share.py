"""One client key's share of the background second opinions (proxy/background_opinion.py,
r14 LOW 5): `background_opinions_max` was per process only, so one app key flooding
failures took the whole budget and every other key's failures went unjudged."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import httpx
import openai

from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_canary_failures import ALIAS, HI

SLOW_STABLE, FAILING_CANARY = "slow-20000", "fail-500"


def flood_then_other_key(proxy: ProxyServer, flood: Callable[[int], None],
                         other: openai.OpenAI) -> tuple[list[str], list[str]]:
    """The canary fails every request; the stable model's second opinion takes 20 s (past the
    0.1 s it is waited for), so each failure's opinion goes on in the background. The flood
    sends 10 requests, then the other key 3: the `late_opinion` marks of each's canary rows.
    (The few drawn for the stable model are given up after 2 s.)"""
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": SLOW_STABLE}]}})
    admin.promote(ALIAS, FAILING_CANARY, canary=90)
    for n in range(10):
        flood(n)
    for n in range(3):
        with contextlib.suppress(openai.InternalServerError, openai.APITimeoutError):
            other.chat.completions.create(model=ALIAS, user=f"b-{n}", messages=HI)
    proxy.wait_for("SELECT count(*) FROM interactions WHERE traffic = 'production'",
                   lambda r: r[0][0] >= 13)
    return marks_of(proxy, "a-"), marks_of(proxy, "b-")


def marks_of(proxy: ProxyServer, prefix: str) -> list[str]:
    return [r[0] for r in proxy.sql(
        "SELECT route ->> 'late_opinion' FROM interactions WHERE traffic = 'production' "
        f"AND user_id LIKE '{prefix}%' AND route ->> 'primary' = '{FAILING_CANARY}' "
        "AND route ->> 'late_opinion' IS NOT NULL")]


def test_one_keys_flood_leaves_room_for_another_keys_opinions(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """Key A's canary failures get 3 opinions (its share: a 4th would leave less than a share
    of the 6 free), key B's all of theirs."""
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY,
                          second_opinion_timeout_s=0.1, background_opinions_max=6,
                          background_opinions_per_key=3)
    admin = proxy.admin()
    flood = proxy.openai(api_key=admin.create_key("app-a")["key"], timeout=2.0)
    other = proxy.openai(api_key=admin.create_key("app-b")["key"], timeout=2.0)

    def one(n: int) -> None:
        with contextlib.suppress(openai.InternalServerError, openai.APITimeoutError):
            flood.chat.completions.create(model=ALIAS, user=f"a-{n}", messages=HI)

    a, b = flood_then_other_key(proxy, one, other)
    assert a.count("asked") == 3 and set(a) == {"asked", "key_share_full"}, a
    assert b and set(b) == {"asked"}, b
    skipped = proxy.sql("SELECT count(*) FROM interactions WHERE "
                        "route ->> 'late_opinion' = 'key_share_full'")[0][0]
    assert skipped >= a.count("key_share_full")  # A's hang-ups on the stable model's too
    metrics = proxy.http().get("/metrics").text
    line = 'tuneloop_background_opinions_skipped_total{reason="key_share_full"} '
    assert f"{line}{float(skipped)}" in metrics, metrics
    missing = {r["target"]: r for r in admin.route_health(ALIAS)["targets"]}
    assert missing[FAILING_CANARY]["opinions_missing"] >= a.count("key_share_full"), missing


def test_a_header_nobody_checks_is_no_key_of_its_own(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """r14c LOW 6: no issued keys, the server's OPENAI_API_KEY used for requests without a
    key. A client sending a new `x-api-key` with each request (a header the proxy never
    forwards, so nobody checks it) was a new client key each time and took the whole budget:
    the other app's failures got `budget_full`. Requests without a checked credential are now
    one client, held to the share like one app key; the app's own key (forwarded upstream,
    checked there) keeps its opinions."""
    proxy = proxy_factory(openai_api_key=UPSTREAM_KEY, second_opinion_timeout_s=0.1,
                          background_opinions_max=6, background_opinions_per_key=3)
    http = httpx.Client(base_url=proxy.base_url, timeout=2.0)

    def rotating(n: int) -> None:
        with contextlib.suppress(httpx.TimeoutException):
            http.post("/chat/completions", headers={"x-api-key": f"made-up-{n}"},
                      json={"model": ALIAS, "user": f"a-{n}", "messages": HI})

    try:
        a, b = flood_then_other_key(proxy, rotating, proxy.openai(timeout=2.0))
    finally:
        http.close()
    assert a.count("asked") == 3 and set(a) == {"asked", "key_share_full"}, a
    assert b and set(b) == {"asked"}, b
    keys = proxy.sql("SELECT user_id LIKE 'a-%', count(DISTINCT route ->> 'client_key') "
                     "FROM interactions WHERE traffic = 'production' GROUP BY 1 ORDER BY 1")
    assert keys == [[False, 1], [True, 1]], keys
