"""Prometheus metrics for /metrics, in a registry of the app's own (no module globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneloop_requests_total", "Proxied requests by endpoint and status code.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "tuneloop_upstream_latency_seconds", "Time until the upstream's response headers.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.fallbacks = Counter(
            "tuneloop_fallbacks_total", "Requests retried on a fallback target.",
            ["alias"], registry=self.registry,
        )
        self.capture_failures = Counter(
            "tuneloop_capture_failures", "Answered requests whose interaction could not be "
            "recorded (logged with a traceback; the client still got its answer).",
            registry=self.registry,
        )
        self.template_mismatches = Counter(
            "tuneloop_template_mismatches", "Requests to a target with transforms that "
            "did not hold its template, or could not be transformed (malformed, echo): sent "
            "unstripped (template is empty for a target without strip_template).",
            ["alias", "target", "template"], registry=self.registry,
        )
        self.stops_dropped = Counter(
            "tuneloop_stops_dropped", "Requests to a target with a stop transform whose own "
            "stop sequences were not all sent (the trained stop comes first; OpenAI allows 4).",
            ["alias", "target"], registry=self.registry,
        )
        self.background_opinions_skipped = Counter(
            "tuneloop_background_opinions_skipped", "Background second opinions of an open "
            "canary not asked: `budget_full` (background_opinions_max in flight), "
            "`key_share_full` (the request's client key has its share, "
            "background_opinions_per_key, and no more is free), `too_quick` (a hang-up sooner "
            "than hangup_probe_min_s); their requests stay unjudged.",
            ["reason"], registry=self.registry,
        )
        self._mismatch_counts: dict[tuple[str, str, str], int] = {}
        self._gauges: list[Gauge] = []
        # labelled children cached: labels() costs a lock and a dict build per call
        self._request_children: dict[tuple[str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def count(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(endpoint, str(status))
            self._request_children[key] = child
        child.inc()

    def observe_upstream(self, endpoint: str, seconds: float) -> None:
        child = self._latency_children.get(endpoint)
        if child is None:
            child = self.upstream_latency.labels(endpoint)
            self._latency_children[endpoint] = child
        child.observe(seconds)

    def template_mismatch(self, alias: str, target: str, template: str) -> int:
        """Count one; the running count for this alias, target and template."""
        self.template_mismatches.labels(alias, target, template).inc()
        key = (alias, target, template)
        self._mismatch_counts[key] = seen = self._mismatch_counts.get(key, 0) + 1
        return seen

    def observe(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        gauge = Gauge(name, help_text, registry=self.registry)
        gauge.set_function(read)
        self._gauges.append(gauge)

    def render(self) -> bytes:
        return generate_latest(self.registry)
