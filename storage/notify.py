"""State every replica caches (routes, issued keys), kept in step across replicas on Postgres.

A change writes `pg_notify('tuneloop', topic)` in the transaction that makes it: Postgres
delivers the notification to every listening session when, and only when, that transaction
commits. Each replica has a `ChangeFeed`: one connection of its own that LISTENs and hands
each topic to a callback; at every (re)connection the callback gets `ALL` as well (a
notification sent while the connection was down is lost, so the replica reloads everything).
Every `reload_s` the callback gets `ALL` on a timer of its own, whatever the connection does
(the reloads read through the store's pool): that bounds how stale a missed notification can
leave a replica, even while the LISTEN connection hangs. The same connection tries to hold a
session advisory lock (`LEADER_LOCK`): the one replica holding it runs the once-per-deployment
jobs (retention); when it dies, its session ends, the lock is free, and another replica takes
it at its next try.

A connection can hang without an error (a network partition, a failover, a stuck server
process): after `timeout_s` without a notification the feed asks its connection something (the
leader lock, or `SELECT 1`), and a connection that has not answered within `timeout_s` more
is closed and made again. TCP keepalives and `tcp_user_timeout` (`tcp_options`) drop one the
network lost within about `timeout_s` as well. The callbacks run one at a time (a reload that
read before a change must not replace one that read after it).

On DuckDB there is one process: `notify` does nothing and no feed runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from storage.backend import is_postgres
from storage.backend.pg_connection import PgConnection
from storage.backend.pg_database import LEADER_LOCK, redact_url, tcp_options
from storage.db import Connection

log = logging.getLogger("tuneloop.notify")

CHANNEL = "tuneloop"
ROUTES = "routes"
KEYS = "keys"
ALL = "*"  # not sent: what a feed reports when it may have missed notifications
TOPICS = (ROUTES, KEYS)

OnChange = Callable[[str], Awaitable[None]]
T = TypeVar("T")


def notify(con: Connection, topic: str) -> None:
    """Tell every replica, at commit, that `topic` changed (nothing on DuckDB)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}")
    if is_postgres(con):
        con.execute("SELECT pg_notify(?, ?)", [CHANNEL, topic])


def within(seconds: float, fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
    """`fn` for `Database.read`, its statements stopped (QueryCanceled) once `seconds` are
    spent in all on Postgres (a statement_timeout; the pooled connection is left without
    one), unchanged on DuckDB: a reload must not hold a pool connection for ever."""
    def bounded(con: Connection) -> T:
        if isinstance(con, PgConnection):
            with con.statement_deadline(time.monotonic() + seconds):
                return fn(con)
        return fn(con)
    return bounded


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
    once after a lost connection, then backing off up to `retry_s` while it can't connect;
    and reloading everything every `reload_s` meanwhile, connected or not."""

    def __init__(self, url: str, on_change: OnChange, *, reload_s: float = 5.0,
                 retry_s: float = 1.0, timeout_s: float = 5.0):
        self.url = url
        self.on_change = on_change
        self.reload_s = reload_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.leader = False
        self.connected = asyncio.Event()
        self.received = 0
        self._calls = asyncio.Lock()

    async def run(self) -> None:
        reloads = asyncio.create_task(self._reload_every(), name="tuneloop-reload")
        try:
            await self._follow()
        finally:
            reloads.cancel()
            await asyncio.gather(reloads, return_exceptions=True)

    async def _reload_every(self) -> None:
        """The fallback for a missed notification, on a timer of its own: a LISTEN connection
        that hangs must not stop it."""
        while True:
            await asyncio.sleep(self.reload_s)
            await self._call(ALL)

    async def _follow(self) -> None:
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
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name="tuneloop-feed",
            connect_timeout=10, **tcp_options(self.timeout_s))
        try:
            await self._ask(conn, f"LISTEN {CHANNEL}")
            await self._try_lead(conn)
            await self._call(ALL)  # anything sent before LISTEN took effect
            self.connected.set()
            asked = time.monotonic()
            while True:
                # (a notifies() generator holds the connection: let each one end first)
                topics = {note.payload async for note in
                          conn.notifies(timeout=self.timeout_s, stop_after=1)}
                if topics:  # and whatever else is already queued: act once per topic
                    topics |= {note.payload async for note in conn.notifies(timeout=0.01)}
                    self.received += len(topics)
                    for topic in sorted(topics & set(TOPICS)):
                        await self._call(topic)
                if time.monotonic() - asked >= self.timeout_s:
                    # is the connection still there? (and a try for the leader lock)
                    await self._try_lead(conn)
                    asked = time.monotonic()
        finally:
            await conn.close()  # never waits on the server

    async def _try_lead(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        if self.leader:
            await self._ask(conn, "SELECT 1")
            return
        row = await self._ask(conn, "SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK])
        self.leader = bool(row and row[0])
        if self.leader:
            log.info("this replica runs the deployment-wide jobs (retention)")

    async def _ask(self, conn: psycopg.AsyncConnection[tuple[object, ...]], query: str,
                   params: list[object] | None = None) -> tuple[object, ...] | None:
        """One statement's first row (None without rows), or TimeoutError when the server
        has not answered within timeout_s: the connection is closed at once (psycopg's own
        cancel would wait seconds more on a server that does not answer)."""
        async def execute() -> tuple[object, ...] | None:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchone() if cursor.description else None

        task = asyncio.ensure_future(execute())
        try:
            await asyncio.wait({task}, timeout=self.timeout_s)
        finally:
            if not task.done():  # no answer in time, or the feed is stopped meanwhile
                await conn.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise TimeoutError(f"no answer to {query.split()[0]} within {self.timeout_s:g} s")
        return task.result()

    async def _call(self, topic: str) -> None:
        async with self._calls:  # one at a time: an older read must not land last
            try:
                await self.on_change(topic)
            except Exception:  # a failed reload must not end the feed; the next tick retries
                log.exception("reloading %s after a change failed", topic)
