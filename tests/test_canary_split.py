"""The canary's split as the statistics need it (proxy/routing.py, storage/route_health.py):
one constant user id cannot put all of an alias's traffic on one target, a client cannot work
out which user ids land on the canary, and a sticky user's requests weigh at most
`max_requests_per_user` per target in the error test."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.conftest import ProxyServer, both_stores

pytestmark = both_stores

ALIAS = "bot"
BASE, FT = "gpt-4o-mini", "ft:gpt-4o-mini-2024-07-18:acme::canary"


def half_and_half(proxy: ProxyServer) -> Any:
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": BASE, "weight": 50},
                                                  {"model": FT, "weight": 50}]}})
    return proxy.openai()


def ask(client: Any, user: str | None, text: str = "hi") -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=ALIAS, user=user, messages=[{"role": "user", "content": text}])
    return str(raw.parse().model)


def test_a_constant_user_id_does_not_put_all_the_traffic_on_one_target(
        proxy: ProxyServer) -> None:
    """An app's backend sending one `user` for everyone: the sticky draw sent every request
    to one target (at a 10% canary, possibly all of them to the canary)."""
    client = half_and_half(proxy)
    served = [ask(client, "backend") for _ in range(60)]
    assert set(served) == {BASE, FT}, served
    proxy.wait_logged(60)
    draws = dict(proxy.sql("SELECT route->>'draw', count(*) FROM interactions "
                           "GROUP BY route->>'draw'"))
    assert draws["random"] >= 40 and draws["random"] + draws.get("sticky", 0) == 60


def test_a_client_cannot_work_out_which_user_ids_land_on_the_canary(
        proxy: ProxyServer) -> None:
    """The draw was blake2b(alias NUL user): any client could pick canary-bound ids offline.
    Now it is keyed with a secret of the server's; the unkeyed hash predicts nothing."""
    client = half_and_half(proxy)
    users = [f"user-{n}" for n in range(40)]
    served = {user: ask(client, user) for user in users}
    assert {user: ask(client, user) for user in users} == served  # still sticky

    def unkeyed(user: str) -> str:
        digest = hashlib.blake2b(f"{ALIAS}\x00{user}".encode(), digest_size=8).digest()
        return BASE if int.from_bytes(digest, "big") / 2**64 < 0.5 else FT

    agree = sum(unkeyed(user) == model for user, model in served.items())
    assert 8 <= agree <= 32, agree  # chance: 20 of 40


def test_a_sticky_users_requests_weigh_at_most_max_requests_per_user(
        proxy: ProxyServer) -> None:
    client = half_and_half(proxy)
    users = [f"user-{n}" for n in range(8)]
    arm: dict[str, str] = {}
    for n in range(8):  # round robin: 8 users x 8 requests, none of them hot
        for user in users:
            arm[user] = ask(client, user, text=f"question {n}")
    for n in range(6):
        ask(client, None, text=f"anonymous {n}")  # drawn per request: one trial each
    proxy.wait_logged(70)
    anonymous = dict(proxy.sql("SELECT route->>'primary', count(*) FROM interactions "
                               "WHERE user_id IS NULL GROUP BY 1"))
    for cap, per_user in ((5, 5), (8, 8), (100, 8)):
        rows = {row["target"]: row for row in proxy.admin().route_health(
            ALIAS, max_requests_per_user=cap)["targets"]}
        for target in (BASE, FT):
            sticky = sum(model == target for model in arm.values())
            assert rows[target]["requests"] == 8 * sticky + anonymous.get(target, 0)
            assert rows[target]["weighed_requests"] == \
                per_user * sticky + anonymous.get(target, 0), (cap, rows[target])
