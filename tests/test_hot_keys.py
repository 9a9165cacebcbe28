"""The hot sticky keys per client key (proxy/hot_keys.py `HotKeys`, r14n HIGH 1): an app whose
backend tags its requests with a few tenant ids keeps them drawn per request (each a trial of
its own in the canary's test) however many requests another client key sends with fresh user
ids; the windows' memory is bounded however many client keys send."""

from __future__ import annotations

from typing import Any

from proxy.hot_keys import HOT_MIN, HOT_NEW, HOT_SETTLED, HotKeys
from proxy.routing import Router, RouteSpec
from tests.conftest import ProxyServer

ALIAS = "bot"
BASE, FT = "gpt-4o-mini", "ft:gpt-4o-mini-2024-07-18:acme::canary"
SPLIT = {"targets": [{"model": BASE, "weight": 50}, {"model": FT, "weight": 50}]}
TENANTS = [f"tenant-{n}" for n in range(6)]


def test_another_keys_fresh_ids_do_not_cool_an_apps_few_ids() -> None:
    """On main one window per alias: 2 fresh-id requests of another key per app request put
    each of the app's 6 tenants at 1/18 of the window, under 10%: every app request sticky."""
    router = Router({ALIAS: RouteSpec.model_validate(SPLIT)}, salt=b"s" * 32)
    draws: list[str] = []
    for n in range(400):
        draws.append(router.plan(ALIAS, TENANTS[n % 6], "app").draw)
        for k in range(2):
            router.plan(ALIAS, f"fresh-{n}-{k}", "other")
    assert draws[6 * HOT_MIN:] == ["random"] * (400 - 6 * HOT_MIN)


def test_the_other_keys_own_constant_id_is_still_hot() -> None:
    router = Router({ALIAS: RouteSpec.model_validate(SPLIT)}, salt=b"s" * 32)
    monitor: list[str] = []
    for n in range(300):
        router.plan(ALIAS, TENANTS[n % 6], "app")
        monitor.append(router.plan(ALIAS, "monitor", "other").draw)
        assert router.plan(ALIAS, f"fresh-{n}", "other").draw == "sticky"
    assert monitor[HOT_MIN:] == ["random"] * (300 - HOT_MIN)


def test_the_windows_are_bounded_and_made_up_keys_do_not_push_out_an_apps() -> None:
    """50,000 client keys sending one request each, then 50,000 sending HOT_MIN each (any
    bearer is a client key in pass-through mode): at most HOT_NEW + HOT_SETTLED windows. The
    one-request keys never push out the app's window: its tenants stay hot throughout."""
    hot = HotKeys()
    for n in range(6 * HOT_MIN):
        hot.seen(ALIAS, TENANTS[n % 6], "app")
    for n in range(50_000):
        hot.seen(ALIAS, f"fresh-{n}", f"key-{n}")
        if n % 1000 == 0:
            assert all(hot.seen(ALIAS, tenant, "app") for tenant in TENANTS)
    assert len(hot.new) == HOT_NEW and len(hot.settled) == 1
    assert all(hot.seen(ALIAS, tenant, "app") for tenant in TENANTS)
    for n in range(50_000):
        for _ in range(HOT_MIN):
            hot.seen(ALIAS, "constant", f"busy-{n}")
    assert len(hot.settled) == HOT_SETTLED and len(hot.new) <= HOT_NEW
    assert sum(len(w.recent) for w in [*hot.settled.values(), *hot.new.values()]) \
        <= HOT_SETTLED * hot.window + HOT_NEW * (HOT_MIN - 1)
    # pushed out at last: the app's window restarts empty, its tenants sticky for a while
    assert ("app" not in {client for _, client in hot.settled})
    assert not hot.seen(ALIAS, TENANTS[0], "app")


def ask(client: Any, user: str) -> None:
    client.chat.completions.create(model=ALIAS, user=user,
                                   messages=[{"role": "user", "content": "hi"}], max_tokens=1)


def test_through_the_proxy_an_apps_tenants_stay_drawn_per_request(proxy: ProxyServer) -> None:
    """Pass-through keys: the app (its own key, 6 tenants) and another key sending two
    requests with fresh user ids per app request. On main every app row was `sticky`."""
    proxy.admin().put_routes({ALIAS: SPLIT})
    app, other = proxy.openai(api_key="sk-app"), proxy.openai(api_key="sk-other")
    for n in range(120):
        ask(app, TENANTS[n % 6])
        ask(other, f"fresh-{n}-a")
        ask(other, f"fresh-{n}-b")
    proxy.wait_logged(360)
    draws = dict(proxy.sql("SELECT route->>'draw', count(*) FROM interactions "
                           "WHERE user_id LIKE 'tenant-%' GROUP BY 1"))
    assert draws.get("random", 0) >= 120 - 6 * HOT_MIN, draws
    fresh = dict(proxy.sql("SELECT route->>'draw', count(*) FROM interactions "
                           "WHERE user_id LIKE 'fresh-%' GROUP BY 1"))
    assert fresh == {"sticky": 240}, fresh
