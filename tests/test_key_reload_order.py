"""A replica's issued keys and routes are reloaded one at a time, so the last kept is the last
read. Before, a reload woken by one change (a notification, the periodic timer) that had read
the keys before the next key was issued could land after the issuing request's own, newer
reload: the new key was refused with 401 on that replica until some later change (seen in CI:
a key created through the admin API refused at its first request)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from proxy.admin.routes_api import read_router_table
from proxy.auth import KeyRing
from proxy.routing import Router
from storage.keys import create_key, key_hashes, new_plaintext
from storage.routes import replace_routes
from storage.store import Store, migrate_store, open_store

T = TypeVar("T")


def held(read: Callable[[], Awaitable[T]], gate: asyncio.Event) -> Callable[[], Awaitable[T]]:
    """`read`, whose answer is handed over only once `gate` opens: a reload slow to land."""
    async def later() -> T:
        got = await read()
        await gate.wait()
        return got
    return later


async def stale_then_fresh(reload: Callable[[Callable[[], Awaitable[T]]], Awaitable[None]],
                           read: Callable[[], Awaitable[T]],
                           change: Callable[[], Awaitable[None]]) -> None:
    """A reload reads, the change is written, the changing request reloads, and only then
    the first reload's answer lands."""
    gate, first_read = asyncio.Event(), asyncio.Event()

    async def noted() -> T:
        got = await read()
        first_read.set()
        return got

    slow = asyncio.ensure_future(reload(held(noted, gate)))
    await first_read.wait()
    await change()
    fresh = asyncio.ensure_future(reload(read))
    await asyncio.sleep(0.05)  # the fresh reload has read (or waits its turn)
    gate.set()
    await asyncio.gather(slow, fresh)


def store(tmp_path: Path) -> Store:
    db = open_store(tmp_path / "keys.duckdb")
    migrate_store(db)
    return db


def test_a_key_issued_during_a_slow_reload_is_kept(tmp_path: Path) -> None:
    db = store(tmp_path)
    plaintext = new_plaintext()
    try:
        async def run() -> KeyRing:
            ring = KeyRing(set())

            async def issue() -> None:
                await db.write(lambda con: create_key(con, "app", False, plaintext, "d" * 16))
            await stale_then_fresh(ring.reload, lambda: db.read(key_hashes), issue)
            return ring
        ring = asyncio.run(run())
        ring.check({"authorization": f"Bearer {plaintext}"})  # before: 401
    finally:
        db.close()


def test_a_route_written_during_a_slow_reload_is_kept(tmp_path: Path) -> None:
    db = store(tmp_path)
    try:
        async def run() -> Router:
            router = Router()

            async def route() -> None:
                await db.write(lambda con: replace_routes(
                    con, {"chat": {"targets": [{"model": "model-a"}]}}, "test"))
            await stale_then_fresh(router.reload, lambda: db.read(read_router_table), route)
            return router
        assert "chat" in asyncio.run(run()).aliases  # before: the route was lost
    finally:
        db.close()
