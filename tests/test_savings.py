"""`tuneloop savings`, GET /admin/routes/{alias}/savings and the savings gauges of /metrics:
traffic through the proxy (official SDK, the fake upstream reporting fixed usage per model)
on a route with a baseline and a canary target, priced by a fixed price table in the settings;
every figure is computed by hand below."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REVIEWER_TOKEN, ProxyServer, both_stores
from tests.test_export_cli import flat, run_cli

ALIAS = "support-bot"
BASE = "gpt-4o-mini"
FT = "ft:gpt-4o-mini-2024-07-18:acme:support:sb1"
# USD per 1M tokens (the fine-tune's entry is the one `ft:BASE:...` models are priced by)
PRICES = {BASE: {"input_per_1m": 0.50, "output_per_1m": 1.50},
          "ft:gpt-4o-mini-2024-07-18": {"input_per_1m": 1.00, "output_per_1m": 4.00},
          "gpt-4o-mini-2024-07-18": {"input_per_1m": 0.15, "output_per_1m": 0.60,
                                     "training_per_1m": 4.00}}
BASE_USAGE = (40_000, 500)  # the long prompt with its instructions and examples
FT_USAGE = (2_000, 500)  # what the fine-tuned model needs
# by hand: 40,000 x $0.50/1M + 500 x $1.50/1M; 2,000 x $1.00/1M + 500 x $4.00/1M
BASE_COST = 0.02 + 0.00075
FT_COST = 0.002 + 0.002
SAVED = BASE_COST - FT_COST  # $0.01675 a request
TRAINED_TOKENS = 1_500_000  # x $4.00/1M = $6.00
TRAINING_COST = 6.00
REQUESTS = 24


def chat(proxy: ProxyServer, count: int, model: str = ALIAS, users: str = "user"
         ) -> Counter[str]:
    """Requests through the proxy, from users `{users}-0`, `{users}-1`, ...: each user's target
    is fixed by the sticky draw (a hash of alias and user), so which targets serve these
    requests is the same on every run. How many each upstream model served (the fake's
    record)."""
    before = len(proxy.upstream.state.requests)
    client = proxy.openai()
    for n in range(count):
        client.chat.completions.create(model=model, messages=[
            {"role": "system", "content": "You are the support bot of Acme."},
            {"role": "user", "content": f"question {n}"}],
            extra_headers={"x-tuneloop-user": f"{users}-{n}"})
    served = Counter(r.json.get("model") for r in proxy.upstream.state.requests[before:]
                     if r.path == "/v1/chat/completions")
    proxy.wait_for("SELECT count(*) FROM interactions WHERE completion_tokens IS NOT NULL",
                   lambda rows: rows[0][0] >= len(proxy.upstream.state.requests))
    return served


def record_training(proxy: ProxyServer, model: str, trained_tokens: int,
                    base: str = "gpt-4o-mini-2024-07-18", **extra: Any) -> None:
    admin = proxy.admin()
    admin.record_job({"id": f"ftjob-{model[-3:]}", "provider": "openai", "base_model": base,
                      "method": "supervised", "status": "running"})
    admin.update_job(f"ftjob-{model[-3:]}", status="succeeded", fine_tuned_model=model,
                     trained_tokens=trained_tokens, **extra)


def canary_proxy(proxy_factory: Callable[..., ProxyServer], **settings: Any) -> ProxyServer:
    proxy = proxy_factory(**{"prices": PRICES, **settings})
    proxy.upstream.state.model_usage.update({BASE: BASE_USAGE, FT: FT_USAGE})
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": BASE}]}})
    proxy.admin().promote(ALIAS, FT, canary=50)
    return proxy


def gauges(proxy: ProxyServer) -> dict[tuple[str, str, str], float]:
    text = httpx.get(f"{proxy.url}/metrics").text
    return {(sample.name, sample.labels["alias"], sample.labels["target"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("tuneloop_route_") for sample in family.samples}


@both_stores
def test_savings_match_the_hand_computed_figures(proxy_factory: Callable[..., ProxyServer],
                                                 tmp_path: Path) -> None:
    proxy = canary_proxy(proxy_factory)
    served = chat(proxy, REQUESTS)
    n_base, n_ft = served[BASE], served[FT]
    assert n_base + n_ft == REQUESTS and n_base and n_ft  # both targets drew traffic
    chat(proxy, 2, model=BASE)  # not through the alias: not counted
    record_training(proxy, FT, TRAINED_TOKENS)

    report = proxy.admin(REVIEWER_TOKEN).savings(ALIAS, days=7)  # a reviewer may read it
    assert report["baseline"] == BASE and report["message"] is None
    base, ft = report["targets"]
    assert (base["target"], base["role"], base["requests"]) == (BASE, "baseline", n_base)
    assert (ft["target"], ft["role"], ft["requests"]) == (FT, "target", n_ft)
    assert (base["prompt_tokens_per_request"], base["completion_tokens_per_request"]) == BASE_USAGE
    assert (ft["prompt_tokens_per_request"], ft["completion_tokens_per_request"]) == FT_USAGE
    assert base["cost_per_request_usd"] == pytest.approx(BASE_COST, abs=1e-9)
    assert ft["cost_per_request_usd"] == pytest.approx(FT_COST, abs=1e-9)
    assert ft["price"] == {"input_per_1m": 1.0, "output_per_1m": 4.0,
                           "source": "settings:ft:gpt-4o-mini-2024-07-18"}
    assert ft["saved_tokens_per_request"] == 38_000
    assert ft["saved_usd_per_request"] == pytest.approx(SAVED, abs=1e-9)
    # per LIVE day: the traffic took seconds, and less than a day counts as one day
    assert ft["live_days"] == 1 and base["live_days"] == 1 and report["live_days"] == 1
    assert ft["saved_tokens_per_day"] == pytest.approx(38_000 * n_ft, abs=1e-3)
    per_day = SAVED * n_ft
    assert round(ft["saved_usd_per_day"], 2) == round(per_day, 2)
    assert ft["saved_usd_per_day"] == pytest.approx(per_day, abs=1e-8)
    assert ft["saved_usd_per_day_at_full_traffic"] == pytest.approx(SAVED * REQUESTS, abs=1e-8)
    # break-even by hand: $6.00 / $0.01675 = 358.2 -> 359 requests
    assert ft["training"]["cost_usd"] == pytest.approx(TRAINING_COST)
    assert ft["break_even_requests"] == 359 == math.ceil(TRAINING_COST / SAVED)
    # in days at the alias's whole traffic (what the model gets once promoted fully), not at
    # the canary's share of it: 24 requests through the alias in its one live day
    assert report["requests_per_day"] == REQUESTS
    assert ft["break_even_days"] == pytest.approx(TRAINING_COST / (SAVED * REQUESTS), abs=1e-3)
    assert ft["break_even"] == ("after 359 requests (~14.9 days at the alias's whole traffic, "
                                "24.0 requests a day)")
    # today's row of the chart: what the canary's requests saved
    today = {row["target"]: row for row in report["daily"]}
    assert today[FT]["saved_usd"] == pytest.approx(SAVED * n_ft, abs=1e-8)
    assert today[BASE]["saved_usd"] is None

    # the logged rows are priced by the same table
    costs = dict(proxy.sql("SELECT upstream_model, max(cost_usd) FROM interactions "
                           "WHERE model = 'support-bot' GROUP BY 1"))
    assert costs[FT] == pytest.approx(FT_COST) and costs[BASE] == pytest.approx(BASE_COST)

    metrics = gauges(proxy)
    assert metrics[("tuneloop_route_cost_per_request_usd", ALIAS, FT)] == pytest.approx(FT_COST)
    assert metrics[("tuneloop_route_prompt_tokens_per_request", ALIAS, BASE)] == 40_000
    assert metrics[("tuneloop_route_saved_usd_per_day", ALIAS, FT)] == pytest.approx(per_day)
    assert metrics[("tuneloop_route_saved_tokens_per_day", ALIAS, FT)] == pytest.approx(
        38_000 * n_ft, abs=1e-3)

    result = run_cli(proxy, tmp_path, "savings", "--alias", ALIAS, "--json")
    assert result.exit_code == 0, result.output
    assert '"break_even_requests": 359' in result.output
    result = run_cli(proxy, tmp_path, "savings", "--alias", ALIAS, token=REVIEWER_TOKEN)
    assert result.exit_code == 0, result.output
    assert "after 359 requests" in flat(result.output) and "$0.016750" in result.output
    assert "it served 1.00 of the window's days" in flat(result.output)


def test_no_traffic_no_price_and_no_saving_are_said_not_crashed(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    proxy = canary_proxy(proxy_factory)
    empty = proxy.admin().savings(ALIAS)
    assert empty["targets"] == [] and "no production traffic" in empty["message"]
    unknown = proxy.admin().savings("nobody-uses-this")
    assert "has no route" in unknown["message"]
    result = run_cli(proxy, tmp_path, "savings", "--alias", "nobody-uses-this")
    assert result.exit_code == 0 and "no production traffic" in flat(result.output)

    # a target no price table knows: "no price", not $0 and not a crash
    local = "acme-local-llm"
    proxy.upstream.state.model_usage[local] = (1_000, 100)
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": BASE, "weight": 50},
                                                  {"model": local, "weight": 50}]}},
                             force=True)  # over the open canary
    served = chat(proxy, 12)
    assert served[local] and served[BASE]
    row = next(t for t in proxy.admin().savings(ALIAS)["targets"] if t["target"] == local)
    assert row["cost_per_request_usd"] is None and row["saved_usd_per_request"] is None
    assert row["saved_tokens_per_request"] == 40_500 - 1_100  # tokens are still known
    assert row["break_even"].startswith("no price for acme-local-llm")
    result = run_cli(proxy, tmp_path, "savings", "--alias", ALIAS)
    assert result.exit_code == 0 and "no price" in flat(result.output)
    assert ("tuneloop_route_cost_per_request_usd", ALIAS, local) not in gauges(proxy)

    # a fine-tune that costs more per request than the baseline never pays for itself
    dear = "ft:gpt-4o-mini-2024-07-18:acme::dear"
    proxy.upstream.state.model_usage[dear] = (40_000, 500)
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": BASE, "weight": 50},
                                                  {"model": dear, "weight": 50}]}},
                             expect_seq=proxy.admin().routes_with_seq()["seq"])
    assert chat(proxy, 12)[dear]
    record_training(proxy, dear, TRAINED_TOKENS)
    row = next(t for t in proxy.admin().savings(ALIAS)["targets"] if t["target"] == dear)
    assert row["saved_usd_per_request"] < 0 and row["break_even"] == "never"
    assert row["break_even_requests"] is None


def test_metrics_answer_from_a_cached_read(proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = canary_proxy(proxy_factory, savings_metrics_cache_s=3600)
    chat(proxy, 6)
    key = ("tuneloop_route_prompt_tokens_per_request", ALIAS, BASE)
    assert gauges(proxy)[key] == 40_000
    proxy.upstream.state.model_usage[BASE] = (100, 10)
    assert chat(proxy, 6)[BASE]  # the figures change...
    assert gauges(proxy)[key] == 40_000  # ...but a scrape answers from the cached read
    assert proxy.admin().savings(ALIAS)["targets"][0]["prompt_tokens_per_request"] < 40_000


def test_bad_days_are_refused(proxy: ProxyServer) -> None:
    answer = proxy.http().get(f"/admin/routes/{ALIAS}/savings", params={"days": "0"},
                              headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "days"
    assert proxy.http().get(f"/admin/routes/{ALIAS}/savings").status_code == 401


def test_cached_prompt_tokens_cost_the_cached_rate(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """The baseline's long prompt mostly read from the provider's prompt cache: logged cost,
    savings and gauges price those tokens at the cached rate (by hand below)."""
    prices = {**PRICES, BASE: {**PRICES[BASE], "cached_input_per_1m": 0.25}}
    proxy = canary_proxy(proxy_factory, prices=prices)
    proxy.upstream.state.model_usage[BASE] = (40_000, 500, 32_000)
    served = chat(proxy, REQUESTS)
    assert served[BASE] and served[FT]
    # 8,000 x $0.50/1M + 32,000 x $0.25/1M + 500 x $1.50/1M = $0.004 + $0.008 + $0.00075
    cached_cost = 0.01275
    costs = dict(proxy.sql("SELECT upstream_model, max(cost_usd) FROM interactions "
                           "WHERE model = 'support-bot' GROUP BY 1"))
    assert costs[BASE] == pytest.approx(cached_cost, abs=1e-12)
    base, ft = proxy.admin().savings(ALIAS)["targets"]
    assert base["cached_tokens_per_request"] == 32_000
    assert base["cost_per_request_usd"] == pytest.approx(cached_cost, abs=1e-9)
    assert base["price"]["cached_input_per_1m"] == 0.25
    assert ft["saved_usd_per_request"] == pytest.approx(cached_cost - FT_COST, abs=1e-9)
    assert gauges(proxy)[("tuneloop_route_cost_per_request_usd", ALIAS, BASE)] == \
        pytest.approx(cached_cost, abs=1e-9)
