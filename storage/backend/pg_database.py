"""The Postgres store: the same `read` / `write` interface as the DuckDB `Database`, shared by
any number of tuneloop replicas.

Writes keep DuckDB's guarantee that one write runs at a time, now across replicas: each
`write(fn)` runs `fn` in one transaction that first takes a transaction-scoped advisory lock,
so a review's check-then-write, a claim, or an ingest batch is atomic against every replica.
Reads run on pooled connections in autocommit mode. Every connection speaks UTC.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from storage.backend.pg_connection import PgConnection
from storage.backend.threads import ThreadedStore
from tuneloop.config import public_url
from tuneloop.errors import StorageError

T = TypeVar("T")
log = logging.getLogger("tuneloop.storage")

# pg_advisory locks: one 64-bit key space per database, shared by every client of it; every
# key tuneloop takes is here, so two uses can't pick the same one
WRITE_LOCK = 0x74756E65_6C6F6F70  # "tuneloop": one write at a time across replicas
MIGRATE_LOCK = WRITE_LOCK + 1  # one replica migrates; the others wait, then find it done
LEADER_LOCK = WRITE_LOCK + 2  # held by the replica that runs deployment-wide jobs (notify)
TRANSFER_LOCK = WRITE_LOCK + 3  # one migrate-store copy into a database at a time
# WRITE_LOCK + 4: storage.search_vectors, one connection finishing migration 51
INDEX_BUILD_LOCK = WRITE_LOCK + 5  # one connection at a time builds storage.online_indexes
# read-only SQL (POST /admin/sql): one query per token across replicas; the two-int form
# pg_try_advisory_lock(SQL_TOKEN_LOCK_CLASS, key of the token's role), storage/sql.py
SQL_TOKEN_LOCK_CLASS = 0x746C7371  # "tlsq"


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return public_url(url)


def json_as_text(raw: psycopg.Connection[Any]) -> None:
    """JSON values come back as the text stored, as DuckDB gives them (psycopg would parse
    them into Python objects): storage code decodes JSON columns itself, the same on both."""
    for name in ("json", "jsonb"):
        raw.adapters.register_loader(name, TextLoader)


def tcp_options(timeout_s: float) -> dict[str, Any]:
    """libpq's options that make the kernel drop a connection the network lost within about
    `timeout_s`: keepalive probes after a third of it idle, then every third; data (or
    probes) unacknowledged for `timeout_s` ends it (`tcp_user_timeout`, Linux)."""
    third = max(1, round(timeout_s / 3))
    return {"keepalives": 1, "keepalives_idle": third, "keepalives_interval": third,
            "keepalives_count": 3, "tcp_user_timeout": max(1, round(timeout_s * 1000))}


def server_tcp_options(timeout_s: float) -> str:
    """The same for the server's end (`options`, per session): a replica that vanished (its
    host lost, not closed) has its backends, and any lock they hold (WRITE_LOCK in an open
    write, a session advisory lock), ended within about `timeout_s`, not after the server's
    default of hours."""
    client = tcp_options(timeout_s)
    return " ".join(f"-c {name}={client[key]}" for name, key in (
        ("tcp_keepalives_idle", "keepalives_idle"),
        ("tcp_keepalives_interval", "keepalives_interval"),
        ("tcp_keepalives_count", "keepalives_count"), ("tcp_user_timeout", "tcp_user_timeout")))


class PgDatabase(ThreadedStore):
    dialect = "postgres"

    def __init__(self, url: str, *, read_threads: int = 3, connect_timeout_s: float = 10.0,
                 wait_s: float = 5.0, tcp_timeout_s: float | None = None):
        """`tcp_timeout_s`: the pooled connections get TCP keepalives and tcp_user_timeout,
        on both ends, that drop one the network lost within about as long (the change feed's
        LISTEN connection has them too, storage.notify); None: libpq's and the server's
        defaults."""
        self.url = url
        self.wait_s = wait_s
        self.path = None
        self._column_types: dict[str, dict[str, str]] = {}
        keepalive = {} if tcp_timeout_s is None else tcp_options(tcp_timeout_s)
        server_side = [] if tcp_timeout_s is None else [server_tcp_options(tcp_timeout_s)]
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=read_threads + 2,
            kwargs={"autocommit": True, "application_name": "tuneloop", **keepalive,
                    "options": " ".join(["-c timezone=UTC", *server_side])},
            open=False,
            name="tuneloop",
            configure=json_as_text,
            # a connection the server closed (restart, pg_terminate_backend) is replaced
            # before use instead of failing the request that draws it
            check=ConnectionPool.check_connection,
            # a call waits this long for a connection: while Postgres is down, a request is
            # answered 503 storage_unavailable promptly (store_wait_s), not after 30 s
            timeout=wait_s,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StorageError(f"cannot connect to {redact_url(url)} within "
                               f"{connect_timeout_s:g} s: is Postgres up, and the URL right?"
                               ) from exc
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pg-write")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="pg-read")
        self._busy: set[psycopg.Connection[Any]] = set()
        self._busy_lock = threading.Lock()
        self._closed = False

    def unavailable(self, exc: BaseException | None = None) -> StorageError:
        """The domain error of a call that could not reach Postgres (503, no password)."""
        lost = not isinstance(exc, PoolTimeout)  # (a subclass of OperationalError)
        return StorageError(
            f"the store {redact_url(self.url)} is unavailable: "
            + ("the connection was lost during the call" if lost else
               f"no connection within {self.wait_s:g} s (store_wait_s)")
            + "; is Postgres up? Retry later")

    def _unreached(self, exc: BaseException, raw: psycopg.Connection[Any] | None) -> bool:
        """A pool that gave no connection in time, or a connection lost during the call
        (not a query's own error, such as a cancelled statement)."""
        return isinstance(exc, PoolTimeout) or (
            isinstance(exc, psycopg.OperationalError) and raw is not None
            and (raw.broken or raw.closed))

    @contextmanager
    def _checkout(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; Postgres out of reach becomes a StorageError (503)."""
        raw: psycopg.Connection[Any] | None = None
        try:
            with self._pool.connection() as raw:
                yield raw
        except (PoolTimeout, psycopg.OperationalError) as exc:
            if self._unreached(exc, raw):
                raise self.unavailable(exc) from exc
            raise

    def connection(self, raw: psycopg.Connection[Any], *, ddl: bool = False) -> PgConnection:
        return PgConnection(raw, ddl=ddl, column_types=self._column_types)

    # -- how one call runs (write, read and their _sync forms: ThreadedStore) --------------
    def _write_call(self, fn: Callable[[Any], T]) -> T:
        with self._checkout() as raw, self._tracked(raw):
            con = self.connection(raw)
            con.execute("BEGIN")
            try:
                con.execute("SELECT pg_advisory_xact_lock(?)", [WRITE_LOCK])
                result = fn(con)
                while con.in_transaction:  # a savepoint left open by fn is committed with it
                    con.execute("COMMIT")
                return result
            except BaseException:
                if not raw.closed:
                    raw.rollback()
                raise

    def _read_call(self, fn: Callable[[Any], T]) -> T:
        with self._checkout() as raw, self._tracked(raw):
            return fn(self.connection(raw))

    def run_with_session_lock(self, key: int, fn: Callable[[PgConnection], T]) -> T:
        """Run fn on one connection holding a session advisory lock (migrations: the other
        replicas wait here, then find the work done). fn manages its own transactions."""
        with self._checkout() as raw:
            raw.execute("SELECT pg_advisory_lock(%s)", [key])
            try:
                return fn(self.connection(raw, ddl=True))
            finally:
                if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raw.rollback()
                raw.execute("SELECT pg_advisory_unlock(%s)", [key])

    def detached_cursor(self) -> DetachedPgCursor:
        """A connection of its own for a result read a page at a time; the caller closes it."""
        return DetachedPgCursor(self)

    class _Tracked:
        def __init__(self, owner: PgDatabase, raw: psycopg.Connection[Any]):
            self.owner, self.raw = owner, raw

        def __enter__(self) -> None:
            with self.owner._busy_lock:
                self.owner._busy.add(self.raw)

        def __exit__(self, *exc: object) -> None:
            with self.owner._busy_lock:
                self.owner._busy.discard(self.raw)

    def _tracked(self, raw: psycopg.Connection[Any]) -> PgDatabase._Tracked:
        return PgDatabase._Tracked(self, raw)

    def interrupt(self) -> None:
        """Cancel every statement this process is running (like DuckDB's interrupt)."""
        with self._busy_lock:
            busy = list(self._busy)
        for raw in busy:
            try:
                raw.cancel_safe(timeout=2.0)
            except psycopg.Error as exc:
                log.warning("could not cancel a Postgres statement: %s", exc)

    async def compact(self) -> Any:
        raise StorageError("compaction rewrites a DuckDB file; on Postgres, space is reclaimed "
                           "by autovacuum (or VACUUM FULL, run by a database administrator)")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._pool.close()


class DetachedPgCursor(PgConnection):
    """A pooled connection held until `close()`, for results kept open across calls."""

    def __init__(self, db: PgDatabase):
        self._db = db
        try:
            raw = db._pool.getconn()
        except PoolTimeout as exc:
            raise db.unavailable(exc) from exc
        super().__init__(raw, column_types=db._column_types)
        with db._busy_lock:
            db._busy.add(raw)

    def close(self) -> None:
        with self._db._busy_lock:
            self._db._busy.discard(self.raw)
        try:
            super().close()
            if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.raw.rollback()
        except psycopg.Error as exc:  # a dead connection: the pool discards it
            log.warning("closing a detached Postgres cursor: %s", exc)
        finally:
            self._db._pool.putconn(self.raw)  # always back: a lost slot is never found again
