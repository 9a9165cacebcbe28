"""POST /admin/forget, /admin/retention and /admin/compact (admin token): data governance."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, json_object, json_response
from proxy.auth import Role
from proxy.context import ProxyContext
from storage.compact import POSTGRES_COMPACT
from storage.db import Connection
from storage.governance import (
    apply_retention,
    expire_quarantined,
    forget_quarantined,
    forget_user,
)
from storage.spool import Spool
from tuneloop.errors import BadRequest

log = logging.getLogger("tuneloop.governance")
RETENTION_EVERY_S = 3600.0
FEED_WAIT_S = 30.0


async def forget(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    user = body.get("user")
    if not isinstance(user, str) or not 0 < len(user) <= 256:
        raise BadRequest("send {\"user\": \"<x-tuneloop-user value>\"}", param="user")
    names = ctx.redactor.stored_names(user)  # its pseudonym if redacted, its old mojibake
    exports: list[dict[str, Any]] = []

    def rows(con: Connection) -> dict[str, int]:
        forgotten = forget_user(con, names)
        exports.extend(forgotten.exports)
        return forgotten.deleted

    deleted = await _delete_everywhere(ctx, rows,
                                       lambda spool: forget_quarantined(spool, names))
    log.warning("forgot user (%d rows deleted; %d export directories hold their examples)",
                sum(deleted.values()), len(exports))
    return json_response({"user": user, "deleted": deleted, "total": sum(deleted.values()),
                          "exports": exports})


async def compact(request: Request) -> Response:
    """Rewrite the database file so deleted rows' bytes are gone (storage.compact). Ingest
    waits meanwhile (the spool holds the traffic); reads wait for the new file."""
    ctx = authorize(request, Role.ADMIN)
    if ctx.settings.db_is_postgres:
        raise BadRequest(POSTGRES_COMPACT, code="not_supported")
    await ctx.writer.ingest_pending()
    result = await ctx.db.compact()
    log.warning("compacted %s: %d -> %d bytes in %.1f s", ctx.db.path, result.bytes_before,
                result.bytes_after, result.seconds)
    return json_response(result.to_json())


async def _delete_everywhere(ctx: ProxyContext, rows: Callable[[Connection], dict[str, int]],
                             quarantined: Callable[[Spool], int]) -> dict[str, int]:
    """Delete in DuckDB and in the spool's quarantine file, on the writer thread (so no ingest
    quarantines a record while that file is rewritten). Interactions still in the spool are
    ingested first: they must be in DuckDB to be deleted."""
    await ctx.writer.ingest_pending()
    spool = ctx.writer.spool

    def run(con: Connection) -> dict[str, int]:
        deleted = rows(con)
        deleted["quarantine"] = quarantined(spool)
        return deleted

    return await ctx.db.write(run)


async def run_retention(ctx: ProxyContext, days: int) -> dict[str, int]:
    deleted = await _delete_everywhere(ctx, lambda con: apply_retention(con, days),
                                       lambda spool: expire_quarantined(spool, days))
    if deleted.get("interactions"):
        log.warning("retention (%d days): deleted %s", days, deleted)
    return deleted


async def retention(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    days = body.get("days", ctx.settings.retention_days)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise BadRequest("days is a whole number of days >= 1 (or set retention_days)",
                         param="days")
    deleted = await run_retention(ctx, days)
    return json_response({"days": days, "deleted": deleted, "total": sum(deleted.values())})


def _expire_local(spool: Spool, days: int, con: Connection) -> int:
    return expire_quarantined(spool, days)


async def retention_loop(ctx: ProxyContext, days: int) -> None:
    """The scheduled retention window: once at start-up, then every hour. With replicas
    (Postgres), the database's rows are deleted by the one replica holding the feed's leader
    lock; every replica expires its own spool's quarantine file."""
    if ctx.feed is not None:
        with contextlib.suppress(TimeoutError):  # connected: it has tried for the lock
            await asyncio.wait_for(ctx.feed.connected.wait(), FEED_WAIT_S)
    while True:
        try:
            if ctx.feed is None or ctx.feed.leader:
                await run_retention(ctx, days)
            else:
                await ctx.db.write(functools.partial(_expire_local, ctx.writer.spool, days))
        except Exception:  # storage trouble: logged, retried next hour, requests unaffected
            log.exception("retention run failed")
        await asyncio.sleep(RETENTION_EVERY_S)


ROUTES = [
    Route("/admin/forget", forget, methods=["POST"]),
    Route("/admin/retention", retention, methods=["POST"]),
    Route("/admin/compact", compact, methods=["POST"]),
]
