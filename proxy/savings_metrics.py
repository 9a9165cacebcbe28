"""The savings gauges of /metrics: per alias and target, tokens and cost per request and what
the target saves per day against the alias's baseline (proxy.savings), over the production
traffic of the last `savings_metrics_days` days.

A scrape never waits on a fresh query more often than every `savings_metrics_cache_s`
seconds: the handler awaits `refresh()` (one grouped query over the window's rows: the time
filter skips older data on both stores), and the collector answers from that snapshot. When
the store fails, the last snapshot is kept and the failure logged: /metrics still answers.

Old figures say they are old: `tuneloop_route_last_request_timestamp_seconds` is each
target's last request in the window (a target that stopped serving keeps its figures until
they leave the window: alert on `time() - that`), and
`tuneloop_savings_computed_timestamp_seconds` is when the snapshot was read (it stops moving
while the store fails).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.pricing import PriceMap
from proxy.savings import savings_report
from storage.routes import load_routes
from storage.savings import target_usage, training_of
from storage.store import Store

log = logging.getLogger("tuneloop.proxy")
LABELS = ["alias", "target"]


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "prompt": GaugeMetricFamily(
            "tuneloop_route_prompt_tokens_per_request",
            "Prompt tokens per production request, per alias and target (savings window).",
            labels=LABELS),
        "completion": GaugeMetricFamily(
            "tuneloop_route_completion_tokens_per_request",
            "Completion tokens per production request, per alias and target.", labels=LABELS),
        "cost": GaugeMetricFamily(
            "tuneloop_route_cost_per_request_usd",
            "USD per production request, per alias and target (absent: no price known).",
            labels=LABELS),
        "tokens_saved": GaugeMetricFamily(
            "tuneloop_route_saved_tokens_per_day",
            "Tokens a target saved per day against its alias's baseline.", labels=LABELS),
        "usd_saved": GaugeMetricFamily(
            "tuneloop_route_saved_usd_per_day",
            "USD a target saved per day against its alias's baseline (absent: no price).",
            labels=LABELS),
        "last_request": GaugeMetricFamily(
            "tuneloop_route_last_request_timestamp_seconds",
            "Unix time of the target's last production request in the savings window: the "
            "age of its figures.", labels=LABELS),
        "computed": GaugeMetricFamily(
            "tuneloop_savings_computed_timestamp_seconds",
            "Unix time the savings gauges were last read from the store (absent: never)."),
    }


class SavingsCollector(Collector):
    def __init__(self, db: Store, prices: PriceMap, *, days: int, max_age_s: float):
        self._db, self._prices, self._days, self._max_age_s = db, prices, days, max_age_s
        self._reports: list[dict[str, Any]] = []
        self._read_at: float | None = None
        self._computed_at: float | None = None  # wall clock of the last successful read
        self._lock = asyncio.Lock()
        self.reads = 0  # database reads so far (the cache's effect, for tests and bench)

    async def refresh(self) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            until = datetime.now(UTC)
            since = until - timedelta(days=self._days)

            def read(con: Any) -> tuple[Any, Any, Any]:
                usage = target_usage(con, since, until, by_day=False)
                models = sorted({row["target"] for row in usage})
                return load_routes(con), usage, training_of(con, models)

            try:
                routes, usage, training = await self._db.read(read)
            except Exception as exc:  # a scrape must answer: keep the last figures
                log.error("savings metrics: could not read the store (last figures kept): %s",
                          exc)
                self._read_at = time.monotonic()
                return
            self.reads += 1
            by_alias: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in usage:
                by_alias[row["alias"]].append(row)
            self._reports = [
                savings_report(alias, routes.get(alias), rows, self._prices, training,
                               days=self._days)
                for alias, rows in sorted(by_alias.items())]
            self._read_at = time.monotonic()
            self._computed_at = until.timestamp()

    def _fresh(self) -> bool:
        return self._read_at is not None and time.monotonic() - self._read_at < self._max_age_s

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _families()
        for report in self._reports:
            for row in report["targets"]:
                labels = [report["alias"], row["target"]]
                families["prompt"].add_metric(labels, row["prompt_tokens_per_request"])
                families["completion"].add_metric(labels, row["completion_tokens_per_request"])
                if row["cost_per_request_usd"] is not None:
                    families["cost"].add_metric(labels, row["cost_per_request_usd"])
                if row.get("saved_tokens_per_day") is not None:
                    families["tokens_saved"].add_metric(labels, row["saved_tokens_per_day"])
                if row.get("saved_usd_per_day") is not None:
                    families["usd_saved"].add_metric(labels, row["saved_usd_per_day"])
                if row.get("last_request_at"):
                    families["last_request"].add_metric(
                        labels, datetime.fromisoformat(row["last_request_at"]).timestamp())
        if self._computed_at is not None:
            families["computed"].add_metric([], self._computed_at)
        yield from families.values()
