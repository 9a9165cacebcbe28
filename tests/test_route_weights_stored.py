"""A route stored with a weight above the bound (1e6: written before the bound, or copied by
`migrate-store`) still loads: the proxy starts and routes with the weights scaled down in
proportion (the same split), says so in its log, and a promotion on it works. Writing such a
weight stays refused (tests/test_promote_inputs.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from proxy.routing import MAX_WEIGHT, parse_route_table
from storage.routes import put_route
from tests.conftest import ProxyServer, both_stores
from tests.store_support import connected
from tuneloop.errors import BadRequest

ALIAS = "heavy"


def test_a_stored_heavy_route_reads_with_the_same_split() -> None:
    table = parse_route_table({ALIAS: {"targets": [{"model": "a", "weight": 5e6},
                                                   {"model": "b", "weight": 1e6},
                                                   {"model": "c", "weight": 0}],
                                       "fallbacks": [{"model": "d", "weight": 1e308}]}})
    spec = table[ALIAS]
    assert [t.weight for t in spec.targets] == [MAX_WEIGHT, MAX_WEIGHT / 5, 0]
    assert [t.weight for t in spec.fallbacks] == [MAX_WEIGHT]
    assert spec.weights_scaled == {"targets.0": 5e6, "fallbacks.0": 1e308}
    with pytest.raises(BadRequest, match=r"targets\.0\.weight: Input should be less than or "
                                         r"equal to 1000000, not 5e\+06"):
        spec.check(ALIAS, {})


@both_stores
def test_the_proxy_starts_and_routes_with_a_stored_heavy_route(
        store: str, proxy_factory: Callable[..., ProxyServer],
        caplog: pytest.LogCaptureFixture) -> None:
    with connected(store) as con:
        put_route(con, ALIAS, {"targets": [{"model": "a", "weight": 3e6},
                                           {"model": "b", "weight": 3e6}]}, "replace", "old")
    with caplog.at_level(logging.WARNING, logger="tuneloop.proxy"):
        proxy = proxy_factory()
    warned = [r.getMessage() for r in caplog.records if "weights above" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert "route 'heavy' is stored with weights above 1e+06 (targets.0.weight 3e+06, " \
           "targets.1.weight 3e+06)" in warned[0]
    client = proxy.openai()
    served = {client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "hi"}]).model for _ in range(40)}
    assert served == {"a", "b"}
    # a reload (another alias's promotion) does not say it again
    with caplog.at_level(logging.WARNING, logger="tuneloop.proxy"):
        proxy.admin().promote("other", "x")
    assert len([r for r in caplog.records if "weights above" in r.getMessage()]) == 1
    # GET shows the route as stored; a promotion on it writes weights within the bound
    assert [t["weight"] for t in proxy.admin().routes()[ALIAS]["targets"]] == [3e6, 3e6]
    promoted = proxy.admin().promote(ALIAS, "new-model")
    assert [(t["model"], t["weight"]) for t in promoted["spec"]["targets"]] == [
        ("new-model", 100.0)]
    assert all(t["weight"] <= MAX_WEIGHT for t in promoted["spec"]["fallbacks"])
