"""A replica's in-memory copies of shared state (the route table, the issued keys' hashes)
follow the store: on Postgres a `storage.notify.ChangeFeed` reloads them when another replica
changes them (LISTEN/NOTIFY, within a round trip of the commit) and every
`settings.shared_reload_s` in any case, on a timer of its own through the store's pool (the
fallback when a notification is missed, or the LISTEN connection hangs); each reload's queries
are stopped after `settings.shared_timeout_s`. On DuckDB the process is alone and reloads them
itself when it changes them (no feed)."""

from __future__ import annotations

from proxy.admin.routes_api import read_router_table
from proxy.context import ProxyContext
from storage.backend.pg_database import PgDatabase
from storage.keys import key_hashes
from storage.notify import ALL, KEYS, ROUTES, ChangeFeed, within


def change_feed(ctx: ProxyContext) -> ChangeFeed | None:
    """The feed that keeps `ctx` in step with the other replicas; None on DuckDB."""
    if not isinstance(ctx.db, PgDatabase):
        return None

    limit_s = ctx.settings.shared_timeout_s

    async def on_change(topic: str) -> None:
        if topic in (ROUTES, ALL):
            ctx.router.replace(*await ctx.db.read(within(limit_s, read_router_table)))
        if topic in (KEYS, ALL):
            ctx.keys.replace(*await ctx.db.read(within(limit_s, key_hashes)))

    return ChangeFeed(ctx.db.url, on_change, reload_s=ctx.settings.shared_reload_s,
                      timeout_s=limit_s)
