"""storage.notify on a real Postgres: a change notified in a write reaches every feed at commit
(not before, not on rollback), a missed one is caught by the periodic reload, a feed whose
connection dies reconnects, and exactly one feed holds the leader lock at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from storage.db import Connection
from storage.keys import create_key
from storage.notify import ALL, KEYS, ROUTES, ChangeFeed, notify
from storage.routes import replace_routes
from storage.store import migrate_store, open_store
from tests.pg_cluster import PgCluster

ROUTE = {"targets": [{"model": "model-a"}]}


class Seen:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self.changed = asyncio.Event()

    async def __call__(self, topic: str) -> None:
        self.topics.append(topic)
        self.changed.set()

    async def wait_for(self, topic: str, timeout_s: float = 10.0) -> None:
        async def until() -> None:
            while topic not in self.topics:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(until(), timeout_s)


async def with_feeds(url: str, count: int, reload_s: float,
                     body: Callable[[list[ChangeFeed], list[Seen], list[asyncio.Task[None]]],
                                    Awaitable[None]]) -> None:
    seen = [Seen() for _ in range(count)]
    feeds = [ChangeFeed(url, s, reload_s=reload_s, retry_s=0.1) for s in seen]
    tasks = [asyncio.create_task(feed.run()) for feed in feeds]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.connected.wait() for f in feeds)), 10)
        for s in seen:
            s.topics.clear()
        await body(feeds, seen, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_a_change_reaches_every_feed_at_commit_only(pg_url: str) -> None:
    db = open_store(pg_url)
    migrate_store(db)

    async def body(feeds: list[ChangeFeed], seen: list[Seen],
                   tasks: list[asyncio.Task[None]]) -> None:
        def rolled_back(con: Connection) -> None:
            replace_routes(con, {"support": ROUTE}, "test")
            raise RuntimeError("the write fails after the change")

        with pytest.raises(RuntimeError):
            await db.write(rolled_back)
        await db.write(lambda con: create_key(con, "app"))
        for s in seen:
            await s.wait_for(KEYS)
            assert ROUTES not in s.topics  # the rolled-back change told no one
        await db.write(lambda con: replace_routes(con, {"support": ROUTE}, "test"))
        for s in seen:
            await s.wait_for(ROUTES)

    try:
        asyncio.run(with_feeds(pg_url, 2, 60.0, body))
    finally:
        db.close()


def test_a_missed_change_is_caught_by_the_periodic_reload(pg_url: str) -> None:
    async def body(feeds: list[ChangeFeed], seen: list[Seen],
                   tasks: list[asyncio.Task[None]]) -> None:
        await seen[0].wait_for(ALL, timeout_s=5)  # nothing notified: the fallback reload

    asyncio.run(with_feeds(pg_url, 1, 0.3, body))


def test_a_feed_reconnects_and_reloads_after_its_connection_dies(
        pg_url: str, pg_cluster: PgCluster) -> None:
    db = open_store(pg_url)
    migrate_store(db)

    async def body(feeds: list[ChangeFeed], seen: list[Seen],
                   tasks: list[asyncio.Task[None]]) -> None:
        with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'tuneloop-feed' AND datname = %s",
                [pg_url.rsplit("/", 1)[1]]).fetchall()
        assert ended == [(True,)]
        await seen[0].wait_for(ALL)  # reconnected: everything reloaded
        await db.write(lambda con: replace_routes(con, {"support": ROUTE}, "test"))
        await seen[0].wait_for(ROUTES)  # and listening again

    try:
        asyncio.run(with_feeds(pg_url, 1, 60.0, body))
    finally:
        db.close()


def test_one_feed_leads_and_another_takes_over_when_it_goes(pg_url: str) -> None:
    async def body(feeds: list[ChangeFeed], seen: list[Seen],
                   tasks: list[asyncio.Task[None]]) -> None:
        assert sum(f.leader for f in feeds) == 1
        index = next(i for i, f in enumerate(feeds) if f.leader)
        others = [f for i, f in enumerate(feeds) if i != index]
        # the leader's replica dies: its session ends, the lock is free
        task = tasks[index]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        async def taken() -> None:
            while not any(f.leader for f in others):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(taken(), 10)
        assert sum(f.leader for f in others) == 1

    asyncio.run(with_feeds(pg_url, 3, 0.2, body))


def test_notify_does_nothing_on_duckdb(tmp_path: Path) -> None:
    db = open_store(tmp_path / "t.duckdb")
    migrate_store(db)
    try:
        db.write_sync(lambda con: notify(con, ROUTES))
        with pytest.raises(ValueError, match="unknown topic"):
            db.write_sync(lambda con: notify(con, "everything"))
    finally:
        db.close()


def test_one_cycle_lease_holder_across_replicas(pg_url: str) -> None:
    """Two stores on one database (two replicas), eight holders racing for one cycle's lease:
    each write is check-then-write under the cross-replica write lock, so exactly one wins
    and the others get the lease_held conflict."""
    from concurrent.futures import ThreadPoolExecutor

    from storage.cycles import acquire_lease
    from tuneloop.errors import Conflict

    stores = [open_store(pg_url) for _ in range(2)]
    migrate_store(stores[0])

    def attempt(n: int) -> str:
        try:
            stores[n % 2].write_sync(lambda con: acquire_lease(con, "nightly", f"h{n}", 600))
        except Conflict as exc:
            assert exc.code == "lease_held"
            return "conflict"
        return "won"

    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(8)))
        assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
        holders = stores[1].read_sync(lambda con: con.execute(
            "SELECT holder FROM cycle_leases WHERE cycle = 'nightly'").fetchall())
        assert holders == [(f"h{outcomes.index('won')}",)]
    finally:
        for store in stores:
            store.close()
