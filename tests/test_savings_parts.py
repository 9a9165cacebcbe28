"""The parts under `tuneloop savings`: prices (litellm's map, fine-tunes, the settings' table),
the usage query by alias, target and day on both stores, the jobs' training cost, and the pure
savings computation's edges."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.finetune import job_fields
from exporter.providers.base import JobInfo
from proxy.pricing import PriceMap
from proxy.savings import savings_report
from proxy.savings_metrics import SavingsCollector
from storage.finetune_jobs import record_job, update_job
from storage.records import insert_interactions, to_arrow
from storage.savings import target_usage, training_of
from storage.store import migrate_store, open_store
from tests.conftest import both_stores
from tests.store_support import connected
from tests.test_storage import record
from tuneloop.config import ModelPrice, Settings, load_settings
from tuneloop.errors import ConfigError

LITELLM = PriceMap.load()


def test_a_fine_tune_is_priced_as_a_fine_tune_of_its_base() -> None:
    dated = LITELLM.lookup("ft:gpt-4o-mini-2024-07-18:acme:support:abc123")
    assert dated is not None and dated.source == "litellm:ft:gpt-4o-mini-2024-07-18"
    # an undated base: the fine-tune snapshot's price, not the base model's (cheaper) one
    undated = LITELLM.lookup("ft:gpt-4o-mini:acme::abc123")
    assert undated is not None and (undated.input, undated.output) == (dated.input, dated.output)
    base = LITELLM.lookup("gpt-4o-mini")
    assert base is not None and undated.input > base.input
    # a base the map has no fine-tune price for: no price, never the base's
    assert LITELLM.lookup("gpt-5-mini") is not None
    assert LITELLM.lookup("ft:gpt-5-mini:acme::abc123") is None
    assert LITELLM.cost("ft:gpt-5-mini:acme::abc123", 1000, 10) is None
    assert LITELLM.lookup("acme-local-llm") is None and LITELLM.cost("acme-local-llm", 5, 5) is None
    assert LITELLM.lookup("openai/gpt-4o-mini") == base.__class__(base.input, base.output,
                                                                  "litellm:gpt-4o-mini",
                                                                  base.cached_input)


def test_the_settings_price_table_comes_first() -> None:
    table = {"acme-local-llm": ModelPrice(input_per_1m=0.2, output_per_1m=0.4),
             "gpt-4o-mini": ModelPrice(input_per_1m=1.0, output_per_1m=2.0,
                                       training_per_1m=3.0),
             "ft:gpt-4o-mini-2024-07-18": ModelPrice(input_per_1m=5.0, output_per_1m=6.0)}
    prices = PriceMap.load(overrides=table)
    assert prices.cost("acme-local-llm", 1_000_000, 500_000) == pytest.approx(0.4)
    assert prices.cost("gpt-4o-mini", 1000, 1000) == pytest.approx(0.003)
    assert prices.cost("ft:gpt-4o-mini-2024-07-18:acme::x", 1000, 1000) == pytest.approx(0.011)
    assert prices.training_price("gpt-4o-mini") == pytest.approx(3e-6)
    assert prices.training_price("acme-local-llm") is None
    settings = Settings(prices={"m": {"input_per_1m": 1, "output_per_1m": 2}})
    assert settings.prices["m"] == ModelPrice(input_per_1m=1, output_per_1m=2)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(prices={"m": {"input_per_1m": -1, "output_per_1m": 2}})
    with pytest.raises(ConfigError, match="prices"):
        load_settings(prices={"m": {"input_per_1m": 1}})


def test_a_finished_job_records_its_trained_tokens_and_their_cost() -> None:
    job = JobInfo(id="ftjob-1", status="succeeded", base_model="gpt-4o-mini-2024-07-18",
                  fine_tuned_model="ft:gpt-4o-mini-2024-07-18:acme::x", trained_tokens=1_000_000)
    fields = job_fields(job)
    assert fields["trained_tokens"] == 1_000_000
    assert fields["training_cost_usd"] == pytest.approx(3.00)  # $3.00 per 1M for 4o-mini
    unknown = job_fields(JobInfo(id="j", status="succeeded", base_model="acme-base",
                                 trained_tokens=10))
    assert unknown["trained_tokens"] == 10 and unknown["training_cost_usd"] is None
    assert "trained_tokens" not in job_fields(JobInfo(id="j", status="running",
                                                      base_model="gpt-4o-mini"))


DAY = 86_400_000_000
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _row(n: int, day: int, target: str | None, alias: str = "bot", prompt: int | None = 100,
         completion: int | None = 10, **extra: Any) -> dict[str, Any]:
    route = None if target is None else (
        f'{{"alias": "{alias}", "target": "{target}", "role": "primary", "attempt": 0}}')
    created = int(NOW.timestamp() * 1e6) - day * DAY
    return record(n, created_at=created, route=route, prompt_tokens=prompt,
                  completion_tokens=completion, **extra)


@both_stores
def test_usage_by_alias_target_and_day(store: str) -> None:
    rows = [
        _row(1, 0, "base"), _row(2, 0, "base", prompt=300, completion=30), _row(3, 0, "ft"),
        _row(4, 1, "ft", prompt=50, completion=5),
        _row(5, 0, "ft", prompt=None, completion=None),  # no usage: not counted
        _row(6, 0, "ft", traffic="evaluation"),  # not production
        _row(7, 0, None),  # not through an alias
        _row(8, 0, "base", alias="other"),
        _row(9, 9, "base"),  # before the window
    ]
    with connected(store) as con:
        insert_interactions(con, to_arrow(rows))
        since, until = NOW - timedelta(days=7), NOW + timedelta(seconds=1)
        found = target_usage(con, since, until, alias="bot")
        today, yesterday = NOW.strftime("%Y-%m-%d"), (NOW - timedelta(days=1)).strftime(
            "%Y-%m-%d")
        at = [(NOW - timedelta(days=d)).isoformat() for d in (0, 1)]
        assert found == [
            {"alias": "bot", "target": "ft", "day": yesterday, "requests": 1,
             "prompt_tokens": 50, "completion_tokens": 5, "cached_tokens": 0,
             "first_at": at[1], "last_at": at[1]},
            {"alias": "bot", "target": "base", "day": today, "requests": 2,
             "prompt_tokens": 400, "completion_tokens": 40, "cached_tokens": 0,
             "first_at": at[0], "last_at": at[0]},
            {"alias": "bot", "target": "ft", "day": today, "requests": 1,
             "prompt_tokens": 100, "completion_tokens": 10, "cached_tokens": 0,
             "first_at": at[0], "last_at": at[0]}]
        every = target_usage(con, since, until, by_day=False)
        assert {(r["alias"], r["target"], r["requests"]) for r in every} == {
            ("bot", "base", 2), ("bot", "ft", 2), ("other", "base", 1)}

        record_job(con, job_id="ftjob-old", provider="openai", base_model="gpt-4o-mini",
                   method="supervised", status="running")
        update_job(con, "ftjob-old", status="succeeded", fine_tuned_model="ft",
                   trained_tokens=10, finished_at=NOW - timedelta(days=3))
        record_job(con, job_id="ftjob-new", provider="openai", base_model="gpt-4o-mini",
                   method="supervised", status="running")
        update_job(con, "ftjob-new", status="succeeded", fine_tuned_model="ft",
                   trained_tokens=2_000, training_cost_usd=0.006, finished_at=NOW)
        assert training_of(con, ["ft", "base"]) == {"ft": {
            "job_id": "ftjob-new", "base_model": "gpt-4o-mini", "trained_tokens": 2_000,
            "training_cost_usd": 0.006}}
        assert training_of(con, []) == {}


def _usage(target: str, requests: int, prompt: int, completion: int,
           day: str | None = "2026-11-30", cached: int = 0, first: float | None = None,
           last: float | None = None) -> dict[str, Any]:
    """A usage row; `first` and `last`: its first and last request, in days before NOW."""
    def at(days: float | None) -> str | None:
        return None if days is None else (NOW - timedelta(days=days)).isoformat()
    return {"alias": "bot", "target": target, "day": day, "requests": requests,
            "prompt_tokens": prompt * requests, "completion_tokens": completion * requests,
            "cached_tokens": cached * requests, "first_at": at(first), "last_at": at(last)}


def test_per_day_is_per_day_the_target_served() -> None:
    """A canary started a day and a half ago, in a 30-day window: its saving per day is what
    it saved over its 1.5 live days, not 1/30 of it."""
    prices = PriceMap({"base": (1e-6, 2e-6), "ft": (1e-6, 2e-6)})
    spec = {"targets": [{"model": "base"}, {"model": "ft"}]}
    usage = [_usage("base", 270, 1000, 100, day=None, first=29.5, last=0),
             _usage("ft", 30, 100, 100, day=None, first=1.5, last=0)]
    report = savings_report("bot", spec, usage, prices, {}, days=30)
    base, ft = report["targets"]
    # by hand: $0.0012 - $0.0003 = $0.0009 a request x 30 requests / 1.5 days = $0.018 a day
    assert (ft["live_days"], base["live_days"], report["live_days"]) == (1.5, 29.5, 29.5)
    assert ft["saved_usd_per_request"] == pytest.approx(0.0009)
    assert ft["saved_usd_per_day"] == pytest.approx(0.018)
    assert ft["saved_tokens_per_day"] == pytest.approx(900 * 30 / 1.5)
    # all the alias's 300 requests over its 29.5 live days
    assert ft["saved_usd_per_day_at_full_traffic"] == pytest.approx(0.0009 * 300 / 29.5)
    assert ft["first_request_at"] == (NOW - timedelta(days=1.5)).isoformat()
    # an hour of canary traffic is not extrapolated to a day: at least one live day
    hour = [usage[0], _usage("ft", 30, 100, 100, day=None, first=1 / 24, last=0)]
    short = savings_report("bot", spec, hour, prices, {}, days=30)["targets"][1]
    assert short["live_days"] == 1.0 and short["saved_usd_per_day"] == pytest.approx(0.027)
    # and never more days than the window
    long = [_usage("ft", 30, 100, 100, day=None, first=40, last=0), usage[0]]
    assert savings_report("bot", spec, long, prices, {}, days=30)["targets"][1][
        "live_days"] == 30


def test_break_even_days_count_the_alias_whole_traffic() -> None:
    """A 10% canary started an hour ago, the alias serving 1,000 requests a day for a week:
    its break-even in days is at the 1,000 a day it gets once promoted, not at its own ~4
    requests counted over a (minimum) day."""
    prices = PriceMap({"base": (1e-6, 2e-6), "ft": (1e-6, 2e-6)})
    spec = {"targets": [{"model": "base", "weight": 90}, {"model": "ft", "weight": 10}]}
    usage = [_usage("base", 6_996, 1000, 100, day=None, first=7, last=0),
             _usage("ft", 4, 100, 100, day=None, first=1 / 24, last=0)]
    job = {"job_id": "j", "base_model": "x", "trained_tokens": 1, "training_cost_usd": 9.0}
    report = savings_report("bot", spec, usage, prices, {"ft": job}, days=7)
    ft = report["targets"][1]
    # by hand: $0.0009 saved a request; $9.00 / $0.0009 = 10,000 requests; 7,000 requests
    # over 7 live days = 1,000 a day -> 10 days (its own 4 a day would say 2,500 days)
    assert report["requests_per_day"] == 1000
    assert ft["break_even_requests"] == 10_000
    assert ft["break_even_days"] == pytest.approx(10.0)
    assert ft["break_even"] == ("after 10,000 requests (~10.0 days at the alias's whole "
                                "traffic, 1,000.0 requests a day)")
    assert ft["saved_usd_per_day"] == pytest.approx(0.0036)  # what the canary saves today


def test_cached_prompt_tokens_are_priced_at_the_cached_rate() -> None:
    # litellm's map: gpt-4o-mini $0.15 in, $0.075 cached in, $0.60 out per 1M
    # by hand: 200 x 0.15 + 800 x 0.075 + 100 x 0.60 = 30 + 60 + 60 = $150 per 1M requests
    assert LITELLM.cost("gpt-4o-mini", 1000, 100, 800) == pytest.approx(150e-6)
    assert LITELLM.cost("gpt-4o-mini", 1000, 100) == pytest.approx(210e-6)
    price = LITELLM.lookup("ft:gpt-4o-mini-2024-07-18:acme::x")
    assert price is not None and price.to_json()["cached_input_per_1m"] == 0.15
    # the settings' table: its cached price, else the input price (what it costs at most)
    table = {"m": ModelPrice(input_per_1m=2.0, output_per_1m=4.0, cached_input_per_1m=0.5),
             "n": ModelPrice(input_per_1m=2.0, output_per_1m=4.0)}
    prices = PriceMap.load(overrides=table)
    assert prices.cost("m", 1000, 10, 600) == pytest.approx((400 * 2 + 600 * 0.5 + 40) / 1e6)
    assert prices.cost("n", 1000, 10, 600) == pytest.approx((2000 + 40) / 1e6)
    assert prices.cost("m", 10, 0, 99) == pytest.approx(10 * 0.5 / 1e6)  # at most the prompt
    # in the savings: the baseline's long prompt is mostly cached, which shrinks the saving
    spec = {"targets": [{"model": "m"}, {"model": "n"}]}
    usage = [_usage("m", 10, 1000, 10, cached=600), _usage("n", 10, 100, 10)]
    m, n = savings_report("bot", spec, usage, prices, {}, days=1)["targets"]
    assert m["cost_per_request_usd"] == pytest.approx(1140e-6)
    assert m["cached_tokens_per_request"] == 600
    assert n["saved_usd_per_request"] == pytest.approx((1140 - 240) * 1e-6)


@both_stores
def test_usage_sums_the_cached_prompt_tokens(store: str) -> None:
    def cached(tokens: Any, key: str = "prompt_tokens_details") -> str:
        return orjson.dumps({"usage": {key: {"cached_tokens": tokens}}}).decode()
    rows = [_row(1, 0, "m", prompt=1000, response=cached(600)),
            _row(2, 0, "m", prompt=1000, response=cached(300, "input_tokens_details")),
            _row(3, 0, "m", prompt=100, response=cached(5000)),  # at most the prompt
            _row(4, 0, "m", prompt=100, response=cached("x")),  # not a number: none
            _row(5, 0, "m", prompt=100),
            # an answer that quotes the key is not a count
            _row(6, 0, "m", prompt=100, response=orjson.dumps({
                "choices": [{"message": {"content": 'say "cached_tokens": 99'}}],
                "usage": {"prompt_tokens_details": {"cached_tokens": 7}}}).decode())]
    with connected(store) as con:
        insert_interactions(con, to_arrow(rows))
        found = target_usage(con, NOW - timedelta(days=1), NOW + timedelta(seconds=1),
                             by_day=False)
    assert [(r["requests"], r["prompt_tokens"], r["cached_tokens"]) for r in found] == [
        (6, 2400, 1007)]


def test_the_baseline_and_the_training_cost() -> None:
    prices = PriceMap({"a": (1e-6, 2e-6), "b": (1e-6, 2e-6)},
                      {"base-a": ModelPrice(input_per_1m=0, output_per_1m=0,
                                            training_per_1m=10)})
    spec = {"targets": [{"model": "b"}], "fallbacks": [{"model": "a"}]}  # after a full promotion
    usage = [_usage("a", 10, 1000, 100), _usage("b", 5, 100, 100)]
    job = {"job_id": "j", "base_model": "base-a", "trained_tokens": 100_000,
           "training_cost_usd": 99.0}
    report = savings_report("bot", spec, usage, prices, {"b": job}, days=1)
    assert report["baseline"] == "a"
    b = report["targets"][1]
    # $0.0012 - $0.0003 = $0.0009 a request; trained 100k x $10/1M = $1.00 (the settings'
    # training price before the job's recorded cost) -> 1,112 requests; at the alias's 15 a
    # day (b's 5 and, before the promotion, a's 10: b gets them all now) -> 74.1 days
    assert b["saved_usd_per_request"] == pytest.approx(0.0009)
    assert b["training"]["cost_usd"] == pytest.approx(1.0)
    assert b["break_even_requests"] == 1112 and b["break_even_days"] == pytest.approx(74.074)
    # no training price in the settings: the job's recorded cost
    again = savings_report("bot", spec, usage, PriceMap({"a": (1e-6, 2e-6), "b": (1e-6, 2e-6)}),
                           {"b": job}, days=1)
    assert again["targets"][1]["break_even_requests"] == math.ceil(99.0 / 0.0009)
    # no job: the saving, and break-even unknown
    none = savings_report("bot", spec, usage, prices, {}, days=1)["targets"][1]
    assert none["break_even"] == "no training cost known"
    # an explicit baseline with no traffic: said, not a crash
    missing = savings_report("bot", spec, usage, prices, {}, days=1, baseline="c")
    assert "served no request" in missing["message"]
    assert all("saved_usd_per_request" not in t for t in missing["targets"])



def test_metrics_keep_their_last_figures_when_the_store_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = open_store(tmp_path / "tuneloop.duckdb")
    migrate_store(db)
    now = datetime.now(UTC)
    # the target's last request was three days ago: its figures are that old, and say so
    last_us = int((now - timedelta(days=3)).timestamp() * 1e6)
    rows = [record(1, created_at=last_us - DAY, prompt_tokens=100, completion_tokens=10,
                   route='{"alias": "bot", "target": "gpt-4o-mini"}'),
            record(2, created_at=last_us, prompt_tokens=100, completion_tokens=10,
                   route='{"alias": "bot", "target": "gpt-4o-mini"}')]
    db.write_sync(lambda con: insert_interactions(con, to_arrow(rows)))
    collector = SavingsCollector(db, LITELLM, days=7, max_age_s=0)

    def samples() -> dict[str, float]:
        return {family.name: sample.value for family in collector.collect()
                for sample in family.samples}

    assert "tuneloop_savings_computed_timestamp_seconds" not in samples()  # never read yet
    asyncio.run(collector.refresh())
    before = samples()
    assert before["tuneloop_route_prompt_tokens_per_request"] == 100
    assert before["tuneloop_route_last_request_timestamp_seconds"] == pytest.approx(
        last_us / 1e6, abs=1e-3)
    computed = before["tuneloop_savings_computed_timestamp_seconds"]
    assert now.timestamp() <= computed <= datetime.now(UTC).timestamp()
    db.close()  # every read fails from now on
    asyncio.run(collector.refresh())  # answers, keeps the last figures, says why
    # the read time stays at the last successful read: the figures' age shows
    assert samples() == before and collector.reads == 1
    assert "could not read the store" in caplog.text
