"""A replica's in-memory copies of shared state (the route table, the issued keys' hashes)
follow the store: on Postgres a `storage.notify.ChangeFeed` reloads them when another replica
changes them (LISTEN/NOTIFY, within a round trip of the commit) and every
`settings.shared_reload_s` in any case (the fallback when a notification is missed). On
DuckDB the process is alone and reloads them itself when it changes them (no feed)."""

from __future__ import annotations

from proxy.admin.routes_api import reload_routes
from proxy.context import ProxyContext
from storage.backend.pg_database import PgDatabase
from storage.keys import key_hashes
from storage.notify import ALL, KEYS, ROUTES, ChangeFeed


async def reload_keys(ctx: ProxyContext) -> None:
    ctx.keys.replace(*await ctx.db.read(key_hashes))


def change_feed(ctx: ProxyContext) -> ChangeFeed | None:
    """The feed that keeps `ctx` in step with the other replicas; None on DuckDB."""
    if not isinstance(ctx.db, PgDatabase):
        return None

    async def on_change(topic: str) -> None:
        if topic in (ROUTES, ALL):
            await reload_routes(ctx)
        if topic in (KEYS, ALL):
            await reload_keys(ctx)

    return ChangeFeed(ctx.db.url, on_change, reload_s=ctx.settings.shared_reload_s)
