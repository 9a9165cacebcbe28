"""State every replica caches (routes, issued keys), kept in step across replicas on Postgres.

A change writes `pg_notify('tuneloop', topic)` in the transaction that makes it: Postgres
delivers the notification to every listening session when, and only when, that transaction
commits. Each replica has a `ChangeFeed`: one connection of its own that LISTENs and hands
each topic to a callback; at every (re)connection, and every `reload_s` without news, the
callback gets `ALL` as well (a notification sent while the connection was down is lost, so
the replica reloads everything; the periodic reload bounds how stale a missed one can leave a
replica). The same connection tries to hold a session advisory lock (`LEADER_LOCK`): the one
replica holding it runs the once-per-deployment jobs (retention); when it dies, its session
ends, the lock is free, and another replica takes it at its next tick.

On DuckDB there is one process: `notify` does nothing and no feed runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg

from storage.backend import is_postgres
from storage.backend.pg_database import LEADER_LOCK, redact_url
from storage.db import Connection

log = logging.getLogger("tuneloop.notify")

CHANNEL = "tuneloop"
ROUTES = "routes"
KEYS = "keys"
ALL = "*"  # not sent: what a feed reports when it may have missed notifications
TOPICS = (ROUTES, KEYS)

OnChange = Callable[[str], Awaitable[None]]


def notify(con: Connection, topic: str) -> None:
    """Tell every replica, at commit, that `topic` changed (nothing on DuckDB)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}")
    if is_postgres(con):
        con.execute("SELECT pg_notify(?, ?)", [CHANNEL, topic])


FIRST_RETRY_S = 0.05
STABLE_S = 1.0  # a session that lasted this long was working: it is retried at once


def reconnect_delay(failures: int, most_s: float) -> float:
    """How long to wait before reconnecting after `failures` failed connection attempts in a
    row: none after a connection that worked was lost (a change made meanwhile reaches this
    replica only once it is back), then doubling from FIRST_RETRY_S up to `most_s`."""
    if failures <= 0:
        return 0.0
    return min(most_s, FIRST_RETRY_S * 2.0 ** min(failures - 1, 30))


class ChangeFeed:
    """One replica's listener: `run()` until cancelled, reconnecting after any failure: at
    once after a lost connection, then backing off up to `retry_s` while it can't connect."""

    def __init__(self, url: str, on_change: OnChange, *, reload_s: float = 5.0,
                 retry_s: float = 1.0):
        self.url = url
        self.on_change = on_change
        self.reload_s = reload_s
        self.retry_s = retry_s
        self.leader = False
        self.connected = asyncio.Event()
        self.received = 0

    async def run(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection: reconnect, reload everything
                # a session that worked for a while: at once; one lost as soon as it was
                # made counts as a failure too (no reconnecting in a tight loop)
                lasted = self.connected.is_set() and time.monotonic() - started >= STABLE_S
                failures = 0 if lasted else failures + 1
                delay = reconnect_delay(failures, self.retry_s)
                log.warning("change feed on %s lost (%s: %s); reconnecting in %g s",
                            redact_url(self.url), type(exc).__name__, exc, delay)
            else:
                failures, delay = 0, 0.0
            self.leader = False
            self.connected.clear()
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name="tuneloop-feed",
                connect_timeout=10) as conn:
            await conn.execute(f"LISTEN {CHANNEL}".encode())
            await self._tick(conn)  # anything sent before LISTEN took effect
            self.connected.set()
            last_tick = time.monotonic()
            while True:
                # (a notifies() generator holds the connection: let each one end first)
                topics = {note.payload async for note in
                          conn.notifies(timeout=self.reload_s, stop_after=1)}
                if topics:  # and whatever else is already queued: act once per topic
                    topics |= {note.payload async for note in conn.notifies(timeout=0.01)}
                    self.received += len(topics)
                    for topic in sorted(topics & set(TOPICS)):
                        await self._call(topic)
                if time.monotonic() - last_tick >= self.reload_s:
                    # the fallback reload, and a try for the leader lock
                    await self._tick(conn)
                    last_tick = time.monotonic()

    async def _tick(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        if not self.leader:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)",
                                            [LEADER_LOCK])).fetchone()
            self.leader = bool(row and row[0])
            if self.leader:
                log.info("this replica runs the deployment-wide jobs (retention)")
        await self._call(ALL)

    async def _call(self, topic: str) -> None:
        try:
            await self.on_change(topic)
        except Exception:  # a failed reload must not end the feed; the next tick retries
            log.exception("reloading %s after a change failed", topic)
