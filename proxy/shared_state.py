"""A replica's in-memory copies of shared state (the route table, the issued keys' hashes)
follow the store: on Postgres a `storage.notify.ChangeFeed` reloads them when another replica
changes them (LISTEN/NOTIFY, within a round trip of the commit) and every
`settings.shared_reload_s` in any case, on a timer of its own through the store's pool (the
fallback when a notification is missed, or the LISTEN connection hangs); each reload's queries
are stopped after `settings.shared_timeout_s`. On DuckDB the process is alone and reloads them
itself when it changes them (no feed)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from proxy.admin.routes_api import read_router_table
from proxy.auth import bearer
from proxy.context import ProxyContext
from storage.backend.pg_database import PgDatabase
from storage.keys import key_hashes, record_client_key
from storage.notify import ALL, KEYS, ROUTES, ChangeFeed, within

log = logging.getLogger("tuneloop.proxy")


def change_feed(ctx: ProxyContext) -> ChangeFeed | None:
    """The feed that keeps `ctx` in step with the other replicas; None on DuckDB."""
    if not isinstance(ctx.db, PgDatabase):
        return None

    limit_s = ctx.settings.shared_timeout_s

    async def on_change(topic: str) -> None:
        if topic in (ROUTES, ALL):
            await ctx.router.reload(lambda: ctx.db.read(within(limit_s, read_router_table)))
        if topic in (KEYS, ALL):
            await ctx.keys.reload(lambda: ctx.db.read(within(limit_s, key_hashes)))

    return ChangeFeed(ctx.db.url, on_change, reload_s=ctx.settings.shared_reload_s,
                      timeout_s=limit_s)


async def record_digest(ctx: ProxyContext, headers: Mapping[str, str]) -> None:
    """At a request with an issued key whose rows' digest is not recorded (issued before
    migration 54), record it (once per key and process): its rotation can then give the new
    key its stratum (storage/keys.py `rotate_key`). A failed write is logged, never the
    request's error (the next reload lists the key again)."""
    token = bearer(headers)
    hashed = None if token is None else ctx.keys.take_undigested(token)
    if token is None or hashed is None:
        return
    digest = ctx.opinions.key_of(token)
    try:
        await ctx.db.write(within(ctx.settings.shared_timeout_s,
                                  lambda con: record_client_key(con, hashed, digest)))
    except Exception:
        log.warning("could not record an issued key's digest", exc_info=True)
