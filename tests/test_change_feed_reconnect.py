"""A replica's change feed whose connection is lost reconnects at once, then backs off: a
route or key change made meanwhile reaches it as soon as the connection is back (it used to
wait its whole `retry_s`, so a key revocation took 1.14 s to reach a replica)."""

from __future__ import annotations

import asyncio

import psycopg

from storage.notify import ALL, ROUTES, ChangeFeed, reconnect_delay
from storage.routes import replace_routes
from storage.store import migrate_store, open_store
from tests.pg_cluster import PgCluster
from tests.test_shared_state import ROUTE, Seen


def test_the_first_retry_is_at_once_and_the_next_ones_back_off() -> None:
    delays = [reconnect_delay(failures, 2.0) for failures in range(8)]
    assert delays[0] == 0.0
    assert 0 < delays[1] < delays[2] < delays[3] < delays[4] < delays[5]
    assert delays[-1] == 2.0 and max(delays) == 2.0
    assert reconnect_delay(10_000, 2.0) == 2.0


def test_a_lost_connection_is_made_again_at_once(pg_url: str, pg_cluster: PgCluster) -> None:
    db = open_store(pg_url)
    migrate_store(db)
    seen = Seen()
    feed = ChangeFeed(pg_url, seen, reload_s=600.0, retry_s=600.0)  # backoff up to 10 min

    async def body() -> None:
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.connected.wait(), 10)
            await asyncio.sleep(1.5)  # a connection that has been working a while
            seen.topics.clear()
            with psycopg.connect(pg_cluster.admin_url(), autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'tuneloop-feed' AND datname = %s",
                    [pg_url.rsplit("/", 1)[1]]).fetchall()
            assert ended == [(True,)]
            await db.write(lambda con: replace_routes(con, {"support": ROUTE}, "test"))
            await seen.wait_for(ALL, timeout_s=20)  # back, and reloaded what it missed
            await db.write(lambda con: replace_routes(con, {}, "test"))
            await seen.wait_for(ROUTES, timeout_s=20)  # and listening again
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(body())
    finally:
        db.close()
