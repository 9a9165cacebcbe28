"""POST /admin/interactions/usage: how many of some interactions are logged and what they cost
(what `tuneloop synthesize` reports), through a storage query instead of SQL sent by a client."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import REVIEWER_TOKEN, ProxyServer
from tests.test_review_api import logged
from tuneloop.errors import BadRequest


def test_usage_counts_the_logged_ids_and_sums_their_cost(proxy: ProxyServer) -> None:
    ids = logged(proxy, "one", "two", "three")
    costs = {r[0]: r[1] for r in proxy.sql("SELECT id, cost_usd FROM interactions")}
    assert all(c is not None and c > 0 for c in costs.values())
    reviewer = proxy.admin(REVIEWER_TOKEN)
    usage = reviewer.usage([ids[0], ids[2], "0190-not-logged", ids[0]])
    assert usage["logged"] == 2
    assert usage["cost_usd"] == pytest.approx(costs[ids[0]] + costs[ids[2]])
    assert reviewer.usage(["0190-not-logged"]) == {"logged": 0, "cost_usd": None}
    assert reviewer.usage([ids[1]])["cost_usd"] == pytest.approx(costs[ids[1]])


@pytest.mark.parametrize("body", [{}, {"ids": []}, {"ids": "abc"}, {"ids": [1]}, {"ids": [""]},
                                  {"ids": ["x" * 65]}, {"ids": ["a"] * 1001}])
def test_bad_ids_are_refused(proxy: ProxyServer, body: dict[str, object]) -> None:
    with pytest.raises(BadRequest, match="ids must be a list of 1-1000 interaction ids"):
        proxy.admin().request("POST", "/admin/interactions/usage", json=body)


def test_usage_needs_a_reviewer_token(proxy: ProxyServer) -> None:
    answer = httpx.post(f"{proxy.url}/admin/interactions/usage", json={"ids": ["a"]})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"]
