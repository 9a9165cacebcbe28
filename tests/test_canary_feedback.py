"""Feedback in the canary's verdict cannot be flooded: on a real proxy issuing keys, a voter
is the API key that sent the feedback, one vote per (interaction, key), and one key weighs at
most `max_votes_per_voter` votes per target (storage/route_health.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig
from tests.conftest import ProxyServer, both_stores

pytestmark = both_stores

ALIAS = "support-bot"
BASE = "gpt-4o-mini"
FT = "ft:gpt-4o-mini-2024-07-18:acme::v1"
CFG = CanaryConfig(percent=50, min_requests=1, min_feedback=5)


def canary_with_traffic(proxy_factory: Callable[..., ProxyServer]
                        ) -> tuple[ProxyServer, dict[str, list[str]]]:
    proxy = proxy_factory(issue_keys=True, openai_api_key="sk-held-by-the-proxy")
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": BASE}]}})
    admin.promote(ALIAS, FT, canary=50)
    client = proxy.openai(api_key=admin.create_key("app")["key"])
    ids = [client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=[{"role": "user", "content": f"question {n}"}],
        extra_headers={"x-tuneloop-user": f"user-{n}"}).headers["x-tuneloop-id"]
        for n in range(40)]
    proxy.wait_logged(len(ids))
    drawn = dict(proxy.sql("SELECT id, route->>'primary' FROM interactions"))
    arms: dict[str, list[str]] = {BASE: [], FT: []}
    for i in ids:
        arms[drawn[i]].append(i)
    assert len(arms[BASE]) >= 8 and len(arms[FT]) >= 8
    return proxy, arms


def vote(proxy: ProxyServer, key: str, ids: list[str], score: float, times: int = 1) -> None:
    with proxy.http() as http:
        for _ in range(times):
            for i in ids:
                sent = http.post("/v1/feedback", json={"id": i, "score": score},
                                 headers={"authorization": f"Bearer {key}"})
                assert sent.status_code == 201, sent.text


def verdict(proxy: ProxyServer) -> tuple[Any, dict[str, dict[str, Any]]]:
    rows = {t["target"]: t for t in proxy.admin().route_health(
        ALIAS, max_votes_per_voter=CFG.max_votes_per_voter)["targets"]}
    return judge_canary(rows[FT], rows[BASE], CFG, timedelta(hours=1)), rows


def test_a_flood_from_one_key_cannot_roll_back_a_good_canary(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy, arms = canary_with_traffic(proxy_factory)
    admin = proxy.admin()
    honest = [admin.create_key(f"user-{n}")["key"] for n in range(4)]
    for n, key in enumerate(honest):  # four users like both models' answers
        vote(proxy, key, arms[FT][n::4] + arms[BASE][n::4], 1)
    flood = admin.create_key("angry")["key"]
    vote(proxy, flood, arms[FT], -1, times=3)  # every canary answer, three times each
    result, rows = verdict(proxy)
    assert rows[FT]["thumbs_down"] == len(arms[FT])  # per request, the flood wins...
    assert rows[FT]["down_votes"] == CFG.max_votes_per_voter  # ...per voter, it weighs 5
    assert rows[BASE]["down_votes"] == 0
    assert result.verdict != "rollback", result.reasons


def test_many_keys_disliking_the_canary_still_roll_it_back(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy, arms = canary_with_traffic(proxy_factory)
    admin = proxy.admin()
    for n in range(4):
        key = admin.create_key(f"user-{n}")["key"]
        vote(proxy, key, arms[FT][n::4], -1)
        vote(proxy, key, arms[BASE][n::4], 1)
    result, rows = verdict(proxy)
    assert rows[FT]["down_votes"] == sum(min(5, len(arms[FT][n::4])) for n in range(4))
    assert result.verdict == "rollback"
    assert result.reasons[0].startswith("thumbs_down")


def test_a_key_changing_its_mind_counts_once(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy, arms = canary_with_traffic(proxy_factory)
    key = proxy.admin().create_key("fickle")["key"]
    vote(proxy, key, arms[FT][:2], -1, times=4)
    vote(proxy, key, arms[FT][:2], 1)
    _, rows = verdict(proxy)
    assert rows[FT]["votes"] == 2 and rows[FT]["down_votes"] == 0


def test_a_relay_key_counts_each_end_users_vote(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """An app whose backend sends all its users' feedback with one key: as one voter it
    weighed 5 votes per target, so its users' thumbs-down never reached the test. Marked
    `feedback_relay` by the admin, its votes count per end user of the rated request."""
    proxy, arms = canary_with_traffic(proxy_factory)
    admin = proxy.admin()
    relay = admin.create_key("backend", feedback_relay=True)
    assert relay["feedback_relay"] is True
    assert proxy.sql(f"SELECT feedback_relay FROM api_keys WHERE id = '{relay['id']}'") \
        == [[True]]
    plain = admin.create_key("other-backend")["key"]
    vote(proxy, plain, arms[FT], -1)
    _, rows = verdict(proxy)
    assert rows[FT]["votes"] == CFG.max_votes_per_voter  # one voter: 5 of its votes
    vote(proxy, relay["key"], arms[FT], -1)
    vote(proxy, relay["key"], arms[BASE], 1)
    result, rows = verdict(proxy)
    assert rows[FT]["down_votes"] == CFG.max_votes_per_voter + len(arms[FT])
    assert rows[BASE]["votes"] == len(arms[BASE])
    assert result.verdict == "rollback" and result.reasons[0].startswith("thumbs_down")


def test_a_relay_key_still_weighs_one_end_user_at_most_max_votes(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """The relay's votes about one end user's requests are that user's: flooding them
    weighs `max_votes_per_voter` like any voter."""
    proxy, _ = canary_with_traffic(proxy_factory)
    admin = proxy.admin()
    relay = admin.create_key("backend", feedback_relay=True)["key"]
    client = proxy.openai(api_key=admin.create_key("app-2")["key"])
    ids = [client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=[{"role": "user", "content": f"again {n}"}],
        extra_headers={"x-tuneloop-user": "mallory"}).headers["x-tuneloop-id"]
        for n in range(30)]
    proxy.wait_logged(40 + len(ids))
    drawn = dict(proxy.sql("SELECT id, route->>'primary' FROM interactions "
                           "WHERE user_id = 'mallory'"))
    on_canary = [i for i in ids if drawn[i] == FT]
    assert len(on_canary) > CFG.max_votes_per_voter
    vote(proxy, relay, on_canary, -1)
    _, rows = verdict(proxy)
    assert rows[FT]["down_votes"] == CFG.max_votes_per_voter
