"""A change feed whose LISTEN connection hangs (its server process stopped with SIGSTOP, as a
network partition, a failover or a stuck backend leave it: no error, no answer). The periodic
reload used to run in the same loop, on that connection, after a try for the leader lock, so a
replica that didn't lead never reloaded again (a revoked key kept working there; issue 12):
now it runs on a timer of its own, and the hung connection is closed and made again after
`timeout_s`."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg

from storage.backend.pg_database import LEADER_LOCK
from storage.notify import ALL, ROUTES, ChangeFeed
from storage.routes import replace_routes
from storage.store import migrate_store, open_store
from tests.pg_cluster import PgCluster
from tests.test_shared_state import ROUTE, Seen


def feed_backends(pg_cluster: PgCluster, pg_url: str) -> list[int]:
    with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
        return [pid for pid, in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'tuneloop-feed' "
            "AND datname = %s ORDER BY backend_start", [pg_url.rsplit("/", 1)[1]])]


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """These server processes stopped (SIGSTOP): their connections hang without an error."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@asynccontextmanager
async def following(feed: ChangeFeed, pg_url: str) -> AsyncIterator[None]:
    """`feed` running as a replica that doesn't lead: another session holds the leader lock
    (so the feed asks for it on its connection at every try)."""
    with psycopg.connect(pg_url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK]).fetchone() \
            == (True,)
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.connected.wait(), 10)
            assert not feed.leader
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def count(seen: Seen, topic: str, times: int, timeout_s: float) -> None:
    async def until() -> None:
        while seen.topics.count(topic) < times:
            seen.changed.clear()
            await seen.changed.wait()
    await asyncio.wait_for(until(), timeout_s)


def test_the_periodic_reload_goes_on_while_the_listen_connection_hangs(
        pg_url: str, pg_cluster: PgCluster) -> None:
    seen = Seen()
    feed = ChangeFeed(pg_url, seen, reload_s=0.3, timeout_s=60.0)  # never made again here

    async def body() -> None:
        async with following(feed, pg_url):
            await asyncio.sleep(0.5)  # a try for the lock has been made on the connection
            with stopped(feed_backends(pg_cluster, pg_url)):
                seen.topics.clear()
                await count(seen, ALL, 3, timeout_s=20)  # reloads go on meanwhile

    asyncio.run(body())


def test_a_hung_listen_connection_is_made_again(pg_url: str, pg_cluster: PgCluster) -> None:
    db = open_store(pg_url)
    migrate_store(db)
    seen = Seen()
    feed = ChangeFeed(pg_url, seen, reload_s=600.0, timeout_s=1.0)  # no reload meanwhile

    async def body() -> None:
        async with following(feed, pg_url):
            hung = feed_backends(pg_cluster, pg_url)
            with stopped(hung):
                seen.topics.clear()
                await seen.wait_for(ALL, timeout_s=30)  # a new connection: reloaded
                assert [p for p in feed_backends(pg_cluster, pg_url) if p not in hung]
                await db.write(lambda con: replace_routes(con, {"support": ROUTE}, "test"))
                await seen.wait_for(ROUTES, timeout_s=20)  # and listening on it

    try:
        asyncio.run(body())
    finally:
        db.close()
