"""The Starlette app: OpenAI-compatible /v1/*, the admin API, /healthz and /metrics.

The process that runs this app owns the DuckDB file (see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from proxy.admin import admin_routes
from proxy.admin.common import ADMIN_PREFIX, json_response, nul_in_url
from proxy.admin.governance import retention_loop
from proxy.admin.routes_api import reload_routes
from proxy.admin.sql import warn_if_sql_role_unsafe
from proxy.auth import AdminAuth, KeyRing, MetricsAuth, ensure_admin_token
from proxy.background_opinion import BackgroundOpinions, ingest_grace_s, key_salt
from proxy.context import ProxyContext, context_of
from proxy.exchange import Exchange, LoggedEndpoint
from proxy.feedback import feedback
from proxy.forward import error_response
from proxy.litellm_upstream import LitellmUpstream
from proxy.metrics import ProxyMetrics
from proxy.passthrough import list_models, passthrough
from proxy.pricing import PriceMap
from proxy.redaction import redactor_for
from proxy.routing import Router, draw_salt
from proxy.savings_metrics import SavingsCollector
from proxy.shared_state import change_feed
from proxy.upstream import HttpUpstream
from proxy.usage_estimate import UsageEstimator
from storage.compute_worker import ComputeWorker
from storage.keys import key_hashes
from storage.search_index import SearchIndexer, queue_for_index
from storage.search_queue import BackgroundIndexer
from storage.spool import Spool
from storage.store import Store, migrate_store, open_store
from storage.writer import LogWriter
from tuneloop.config import Settings
from tuneloop.errors import BadRequest, NotFound, TuneloopError

log = logging.getLogger("tuneloop.proxy")

LOGGED_ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}


async def healthz(request: Request) -> Response:
    ctx = context_of(request)
    # 200 either way: requests are answered and spooled while the database refuses writes;
    # "degraded" while the latest ingest attempt failed (last_ingest_error says why)
    failing = ctx.writer.stats.last_error is not None
    known = ctx.indexer.stats.lag_known
    return json_response(
        {"status": "degraded" if failing else "ok", "spool_bytes": ctx.writer.spool.size_bytes,
         "ingest_lag_seconds": round(ctx.writer.ingest_lag_seconds(), 3),
         "last_ingest_error": ctx.writer.stats.last_error,
         # what /metrics has as tuneloop_search_index_lag_rows (the review app shows it)
         # null: the last count outran its statement timeout (storage.search_queue)
         "search_index_lag_rows": ctx.indexer.stats.lag_rows if known else None,
         # of those, the ones search's unindexed tail leaves out (storage.search_tail)
         "search_tail_missed_rows": ctx.indexer.stats.tail_missed_rows if known else None}
    )


async def metrics(request: Request) -> Response:
    ctx = context_of(request)
    ctx.metrics_auth.check(request.headers)
    await ctx.savings.refresh()
    body = ctx.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TuneloopError)
    return error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"no route for {request.method} {request.url.path}"))
    if exc.status_code == 405:
        error = BadRequest(f"method {request.method} is not allowed on {request.url.path}",
                           code="method_not_allowed")
        error.status_code = 405
        return error_response(error)
    error = BadRequest(str(exc.detail))
    error.status_code = exc.status_code
    return error_response(error)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    error = TuneloopError("the proxy hit an internal error; it has been logged")
    return error_response(error)


def app_store(settings: Settings) -> Store:
    """The store as the app opens it (not yet migrated): with Postgres, its pool waits
    `store_wait_s` for a connection and drops one the network lost within about
    `shared_timeout_s`."""
    return open_store(settings.db, wait_s=settings.store_wait_s,
                      tcp_timeout_s=settings.shared_timeout_s)


def _build_context(settings: Settings, admin_token: str) -> ProxyContext:
    db = app_store(settings)
    migrate_store(db)
    spool = Spool(settings.spool_path, settings.spool_max_bytes)
    worker = ComputeWorker() if settings.index_worker_min_rows else None
    prices = PriceMap.load(overrides=settings.prices)
    # the search index is written by a background indexer, off the ingest's critical path
    indexer = BackgroundIndexer(db, SearchIndexer(worker,
                                                  min_rows=settings.index_worker_min_rows),
                                interval_s=max(settings.ingest_interval_ms / 1000, 0.02))
    writer = LogWriter(db, spool, batch_rows=settings.ingest_batch_rows,
                       interval_s=settings.ingest_interval_ms / 1000,
                       prepare=UsageEstimator(prices, worker),
                       after_insert=queue_for_index, on_ingested=indexer.wake)
    metrics_ = ProxyMetrics()
    metrics_.observe("tuneloop_spool_bytes", "Bytes in the spool, not yet in DuckDB.",
                     lambda: spool.size_bytes)
    metrics_.observe("tuneloop_ingest_lag_seconds", "Age of the oldest interaction not yet "
                     "ingested.", writer.ingest_lag_seconds)
    metrics_.observe("tuneloop_dropped_interactions", "Interactions dropped: spool full.",
                     lambda: spool.dropped)
    metrics_.observe("tuneloop_logged_interactions", "Interactions spooled since start.",
                     lambda: writer.stats.logged)
    metrics_.observe("tuneloop_ingested_interactions", "Interactions ingested since start.",
                     lambda: writer.stats.ingested)
    metrics_.observe("tuneloop_ingest_failures", "Failed ingest attempts since start.",
                     lambda: writer.stats.failures)
    metrics_.observe("tuneloop_search_index_lag_rows", "Interactions ingested and not yet in "
                     "the search index (NaN: not counted in time).",
                     lambda: indexer.stats.lag_rows if indexer.stats.lag_known else math.nan)
    metrics_.observe("tuneloop_search_index_lag_seconds", "Age of the oldest interaction not "
                     "yet in the search index (NaN: not counted in time).",
                     lambda: indexer.stats.lag_seconds if indexer.stats.lag_known else math.nan)
    savings = SavingsCollector(db, prices, days=settings.savings_metrics_days,
                               max_age_s=settings.savings_metrics_cache_s)
    metrics_.registry.register(savings)
    redactor = redactor_for(settings)
    opinions = BackgroundOpinions(settings.background_opinions_max, writer.log, prices,
                                  redactor, metrics_.background_opinions_skipped,
                                  per_key=settings.background_opinions_per_key,
                                  salt=key_salt(admin_token),
                                  grace_s=ingest_grace_s(settings))
    metrics_.observe("tuneloop_background_opinions_in_flight", "Background second opinions "
                     "of open canaries being asked (at most background_opinions_max).",
                     lambda: opinions.in_flight)
    reviewer = settings.reviewer_token.get_secret_value() if settings.reviewer_token else None
    return ProxyContext(
        settings=settings, db=db, writer=writer, indexer=indexer, worker=worker,
        router=Router(salt=draw_salt(admin_token)),
        http=HttpUpstream(),
        litellm=LitellmUpstream(), admin=AdminAuth(admin_token, reviewer),
        keys=KeyRing(*db.write_sync(key_hashes)), metrics=metrics_,
        prices=prices, redactor=redactor, savings=savings,
        opinions=opinions,
        metrics_auth=MetricsAuth.from_settings(settings, admin_token),
    )


def create_app(settings: Settings) -> FastPath:
    settings, token_file = ensure_admin_token(settings)
    assert settings.admin_token is not None
    admin_token = settings.admin_token.get_secret_value()
    if token_file:
        log.warning("admin token: read from %s (mode 0600)", token_file)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = _build_context(settings, admin_token)
        app.state.ctx = ctx
        if ctx.worker is not None:  # spawn it now: the first big batch would wait seconds
            asyncio.get_running_loop().run_in_executor(None, ctx.worker.worker_pid)
        try:
            replayed = await ctx.writer.ingest_pending()
            if replayed:
                log.warning("replayed %d interactions from the spool", replayed)
        except Exception as exc:
            log.error("could not replay the spool at start (will retry): %s", exc)
        await reload_routes(ctx)
        if settings.db_is_postgres:
            sql_url = settings.sql_db.get_secret_value() if settings.sql_db else None
            await asyncio.to_thread(warn_if_sql_role_unsafe, ctx.db, sql_url)
        ctx.feed = change_feed(ctx)
        feed = None if ctx.feed is None else asyncio.create_task(ctx.feed.run(),
                                                                  name="tuneloop-feed")
        await ctx.http.start()
        ctx.writer.start()
        if ctx.feed is not None:  # replicas: the one holding the leader lock indexes
            change = ctx.feed
            ctx.indexer.may_run = lambda: change.leader
        ctx.indexer.start()
        # what exists now lives as long as the process: keep the collector off it
        gc.collect()
        gc.freeze()
        retention = (asyncio.create_task(retention_loop(ctx, settings.retention_days))
                     if settings.retention_days else None)
        try:
            yield
        finally:
            for task in (retention, feed):
                if task is not None:
                    task.cancel()
            await ctx.opinions.close()  # before the writer: none logs after it
            await ctx.writer.close()
            await ctx.indexer.close()
            if ctx.worker is not None:
                ctx.worker.close()
            await ctx.http.close()
            ctx.db.close()

    routes: list[BaseRoute] = [
        Route(path, LoggedEndpoint(path, endpoint), methods=["POST"])
        for path, endpoint in LOGGED_ENDPOINTS.items()
    ]
    routes += [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/v1/{rest:path}", passthrough,
              methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes(fault_injection=settings.fault_injection),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            TuneloopError: _on_domain_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
    )
    return FastPath(app)


class FastPath:
    """The logged endpoints skip Starlette's router and middleware (the hot path: an `Exchange`
    parses its own input and answers its own errors); everything else goes to Starlette."""

    def __init__(self, app: Starlette):
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if scope["method"] == "POST":
                endpoint = LOGGED_ENDPOINTS.get(path)
                if endpoint is not None:
                    await Exchange(self.state.ctx, path, endpoint, scope, receive, send).run()
                    return
            if path.startswith(ADMIN_PREFIX) and (refused := nul_in_url(scope)) is not None:
                await error_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)
