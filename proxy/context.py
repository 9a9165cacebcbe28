"""Everything a request handler needs, built once at start-up and reached via `app.state`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from starlette.requests import Request

from proxy.auth import AdminAuth, KeyRing, MetricsAuth
from proxy.background_opinion import BackgroundOpinions
from proxy.litellm_upstream import LitellmUpstream
from proxy.metrics import ProxyMetrics
from proxy.pricing import PriceMap
from proxy.redaction import Redactor
from proxy.routing import Router
from proxy.savings_metrics import SavingsCollector
from proxy.upstream import HttpUpstream
from storage.compute_worker import ComputeWorker
from storage.notify import ChangeFeed
from storage.search_queue import BackgroundIndexer
from storage.store import Store
from storage.writer import LogWriter
from tuneloop.config import Settings


@dataclass
class ProxyContext:
    settings: Settings
    db: Store
    writer: LogWriter
    indexer: BackgroundIndexer
    worker: ComputeWorker | None
    router: Router
    http: HttpUpstream
    litellm: LitellmUpstream
    admin: AdminAuth
    keys: KeyRing
    metrics: ProxyMetrics
    prices: PriceMap
    redactor: Redactor
    savings: SavingsCollector
    opinions: BackgroundOpinions
    """An open canary's second opinions that go on after the app got its answer."""
    metrics_auth: MetricsAuth = field(default_factory=lambda: MetricsAuth(False, []))
    feed: ChangeFeed | None = None  # Postgres: follows the other replicas (proxy.shared_state)
    # one template discovery at a time per server (proxy/admin/templates_api.py)
    discovery_lock: threading.Lock = field(default_factory=threading.Lock)


def context_of(request: Request) -> ProxyContext:
    ctx: ProxyContext = request.app.state.ctx
    return ctx
