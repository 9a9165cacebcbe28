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
    add_counts,
    apply_retention_chunk,
    expire_quarantined,
    forget_interactions,
    forget_quarantined,
    mark_forgotten,
    merge_exports,
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
    await ctx.writer.ingest_pending()  # rows still in the spool must be in the store
    ids = await ctx.db.write(lambda con: mark_forgotten(con, names))
    deleted: dict[str, int] = {}
    exports: list[dict[str, Any]] = []
    chunk_rows = ctx.settings.delete_chunk_rows
    for start in range(0, max(len(ids), 1), chunk_rows):  # no id: one empty chunk's counts
        chunk = ids[start:start + chunk_rows]
        forgotten = await ctx.db.write(functools.partial(forget_interactions, ids=chunk))
        add_counts(deleted, forgotten.deleted)
        exports.extend(forgotten.exports)
    deleted["quarantine"] = await _in_quarantine(ctx, lambda spool: forget_quarantined(
        spool, names))
    exports = merge_exports(exports)
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


async def _in_quarantine(ctx: ProxyContext, clean: Callable[[Spool], int]) -> int:
    """Clean the spool's quarantine file on the writer thread (so no ingest quarantines a
    record while that file is rewritten)."""
    spool = ctx.writer.spool
    return await ctx.db.write(lambda con: clean(spool))


async def run_retention(ctx: ProxyContext, days: int) -> dict[str, int]:
    """Delete interactions older than `days` days, a write per `delete_chunk_rows` of them:
    the other writes (ingest, reviews; every replica's, on Postgres) go on between two."""
    await ctx.writer.ingest_pending()
    deleted: dict[str, int] = {"interactions": 0}
    chunk_rows = ctx.settings.delete_chunk_rows
    while True:
        chunk = await ctx.db.write(
            lambda con: apply_retention_chunk(con, days, chunk_rows))
        add_counts(deleted, chunk)
        if chunk["interactions"] < chunk_rows:
            break
    deleted["quarantine"] = await _in_quarantine(
        ctx, lambda spool: expire_quarantined(spool, days))
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
