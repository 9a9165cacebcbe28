"""Read-only SQL for `tuneloop sql`: one allowed SELECT, bounded in rows, bytes and time.

The connection has external access switched off (no file reads, COPY, ATTACH or extensions);
on top of that the statement must pass the allowlists of storage/sql_check.py, and it runs in a
transaction that is rolled back. The answer is serialized while it is fetched, a few rows at a
time, and the query stops as soon as it would pass `max_bytes`: a huge answer is refused (413)
without ever being built. A timer interrupts the connection after `timeout_s`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import psycopg

from storage.backend.pg_connection import PgConnection
from storage.backend.pg_database import (
    SQL_TOKEN_LOCK_CLASS,
    PgDatabase,
    json_as_text,
    redact_url,
)
from storage.db import Connection, Database
from storage.migrations.m049_sql_row_cap import ROW_TOO_LARGE
from storage.sql_check import check_read_only
from storage.sql_check_pg import check_pg_query
from tuneloop.errors import BadRequest, Forbidden, PayloadTooLarge, StorageError

__all__ = [
    "SqlLimits",
    "answer_json",
    "check_read_only",
    "end_query_turn",
    "run_read_only",
    "sql_connection",
    "take_query_turn",
]

MAX_BATCH_ROWS = 1024
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_OPTIONS = orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class SqlLimits:
    max_rows: int = 10_000
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 10.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, str | float):
        return value
    return str(value)  # Postgres's inet, ranges, intervals...: their text form


def _default(value: Any) -> Any:
    converted = _jsonable(value)
    if converted is value:
        raise TypeError(f"cannot serialize {type(value).__name__}")
    return converted


def _row_json(row: tuple[Any, ...]) -> bytes:
    try:
        return orjson.dumps(row, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:  # integers beyond 64 bits, odd keys: the slow, total path
        return orjson.dumps(_jsonable(row), option=_OPTIONS)


class _OwnPgConnection(PgConnection):
    """A connection of its own for one query, closed with it: whatever the query leaves in
    its session (a session advisory lock, a setting) ends with the session, and never
    reaches a pooled connection that the store's writes use."""

    def close(self) -> None:
        super().close()
        self.raw.close()


def open_pg_for_sql(url: str, *, connect_timeout_s: float = 10.0) -> PgConnection:
    try:
        raw = psycopg.connect(url, autocommit=True, options="-c timezone=UTC",
                              application_name="tuneloop-sql",
                              connect_timeout=max(1, int(connect_timeout_s)))
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to {redact_url(url)} for read-only SQL: "
                           f"{exc}".strip()) from exc
    json_as_text(raw)
    return _OwnPgConnection(raw)


def sql_connection(db: Database | PgDatabase, sql_url: str | None = None) -> Connection:
    """The connection one read-only query runs on; the caller closes it. DuckDB: a cursor
    of its own. Postgres: a new session, as the `sql_db` role when one is configured."""
    if isinstance(db, PgDatabase):
        return open_pg_for_sql(sql_url or db.url)
    return db.detached_cursor()


def take_query_turn(con: Connection, holder: str) -> bool:
    """Postgres: take `holder`'s turn (the name of a token's role, never the token) for this
    query across every replica of the database: a session advisory lock on the query's own
    connection (so it ends with the query, however that ends), tried, never waited for. False
    when another session (another replica) holds it. The query itself cannot release it (the
    name check refuses `pg_advisory_*`). DuckDB: True; one process holds the file, and the
    replica's own gate is the whole rule."""
    if not isinstance(con, PgConnection):
        return True
    row = con.raw.execute("SELECT pg_try_advisory_lock(%s, %s)",
                          [SQL_TOKEN_LOCK_CLASS, _turn_key(holder)]).fetchone()
    return bool(row and row[0])


def end_query_turn(con: Connection, holder: str) -> None:
    """Postgres: give `holder`'s turn back before the connection closes. Closing alone frees
    it only once the server's backend has exited, after the client has moved on, so the
    token's next query could find its own finished one still "running" (seen under load in
    CI: 429 query_running). A broken connection: its backend's exit frees it."""
    if not isinstance(con, PgConnection) or con.raw.closed:
        return
    with contextlib.suppress(psycopg.Error):
        if con.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            con.raw.rollback()
        con.raw.execute("SELECT pg_advisory_unlock(%s, %s)",
                        [SQL_TOKEN_LOCK_CLASS, _turn_key(holder)])


def _turn_key(holder: str) -> int:
    return int.from_bytes(hashlib.blake2b(holder.encode(), digest_size=4).digest(), "big",
                          signed=True)


def answer_json(con: Connection, sql: str, limits: SqlLimits) -> bytes:
    """`{"columns": [...], "rows": [[...], ...], "truncated": bool}` as JSON bytes."""
    if isinstance(con, PgConnection):
        return _pg_answer_json(con, sql, limits)
    check_read_only(con, sql)
    deadline = time.monotonic() + limits.timeout_s
    timer = threading.Timer(limits.timeout_s, con.interrupt)
    timer.start()
    con.execute("BEGIN TRANSACTION")
    try:
        return _fetch_duckdb(con, sql, limits, deadline)
    except duckdb.InterruptException as exc:
        raise _timeout(limits) from exc
    except duckdb.PermissionException as exc:
        raise Forbidden(f"not allowed: {exc}", code="read_only") from exc
    except duckdb.Error as exc:
        raise BadRequest(f"query failed: {exc}") from exc
    finally:
        timer.cancel()
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")


def _pg_answer_json(con: PgConnection, sql: str, limits: SqlLimits) -> bytes:
    """On Postgres the database itself enforces what DuckDB's statement check does: one
    statement (the extended protocol refuses more), in a READ ONLY transaction, under a
    statement timeout, read through a server-side cursor so only what is sent is fetched,
    and each row is measured by the server before it is sent (`row_capped`). Run it on a
    connection of a role without write rights (the `sql_db` setting) to make the limit the
    database's own, whatever the query does."""
    check_pg_query(sql)
    deadline = time.monotonic() + limits.timeout_s
    timer = threading.Timer(limits.timeout_s + 0.5, con.cancel)
    timer.start()
    con.execute("BEGIN")
    try:
        con.raw.execute(b"SET TRANSACTION READ ONLY")
        con.raw.execute(f"SET LOCAL statement_timeout = {int(limits.timeout_s * 1000)}".encode())
        query = _TRAILING.sub("", sql)
        columns = _columns_alone(con.raw, query)
        with con.raw.cursor(name="tl_sql") as cursor:
            capped = row_capped(query, len(columns), limits.max_bytes) if columns else query
            cursor.execute(_no_placeholders(capped), [])
            return _fetch(cursor, limits, deadline, columns)
    except psycopg.errors.QueryCanceled as exc:
        raise _timeout(limits) from exc
    except psycopg.Error as exc:
        if exc.sqlstate == ROW_TOO_LARGE:
            raise _too_large(limits) from exc
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction
                      | psycopg.errors.InsufficientPrivilege):
            raise Forbidden(f"not allowed: {exc}", code="read_only") from exc
        raise BadRequest(f"query failed: {exc}") from exc
    finally:
        timer.cancel()
        with contextlib.suppress(psycopg.Error):
            con.execute("ROLLBACK")


_TRAILING = re.compile(r"[\s;]+$")  # one statement anyway: trailing semicolons go


def _columns_alone(raw: psycopg.Connection[Any], query: str) -> list[str]:
    """The query's column names. It must be one statement on its own (parsed and described,
    not planned nor run: the protocol's Parse and Describe), or it could close the wrapper's
    bracket itself (`1) q WHERE false UNION ALL SELECT ... FROM (SELECT 1`) and send rows the
    wrapper never measures."""
    name = b"tl_sql_alone"
    for result in (raw.pgconn.prepare(name, query.encode()),
                   raw.pgconn.describe_prepared(name)):
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result)
    return [(result.fname(i) or b"").decode(errors="replace") for i in range(result.nfields)]


def _no_placeholders(sql: str) -> bytes:
    """Sent with an empty parameter list (the extended protocol: one statement only), so
    `%`, psycopg's placeholder mark, is doubled."""
    return sql.replace("%", "%%").encode()


def row_capped(query: str, columns: int, max_bytes: int) -> str:
    """The query (one statement that parses alone, with this many columns) wrapped so that the
    server measures each row before sending it: the sum of its values' sizes as text (what
    the text protocol sends; `octet_length` of a stored text or json value reads its header,
    not the value), ending the query at the first row over `max_bytes` (migration 49): no row
    larger than the whole answer may be crosses the socket. The same rows and order; the
    columns are renamed by position (the names come from the query's own description). The
    newline ends a trailing `--` comment; `OFFSET 0` keeps the planner from pulling the query
    up into the wrapper, where each value would be computed twice (measured, then sent)."""
    names = ", ".join(f"c{i}" for i in range(columns))
    size = " + ".join(f"coalesce(octet_length(q.c{i}::text), 0)::bigint" for i in range(columns))
    return (f"SELECT * FROM (SELECT * FROM (\n{query}\n) AS q0 OFFSET 0) AS q({names}) "
            f"WHERE tuneloop_sql_row_fits({size}, {int(max_bytes)})")


def _fetch_duckdb(con: duckdb.DuckDBPyConnection, sql: str, limits: SqlLimits,
                  deadline: float) -> bytes:
    return _fetch(con.execute(sql), limits, deadline)


def _fetch(cursor: Any, limits: SqlLimits, deadline: float,
           names: list[str] | None = None) -> bytes:
    columns = names if names is not None else [d[0] for d in cursor.description or []]
    head = b'{"columns":' + orjson.dumps(columns) + b',"rows":['
    parts = [head]
    size = len(head) + 64
    count = 0
    batch = 1
    truncated = False
    while True:
        rows = cursor.fetchmany(min(batch, limits.max_rows + 1 - count))
        if not rows:
            break
        for row in rows:
            if count == limits.max_rows:
                truncated = True
                break
            encoded = _row_json(row)
            size += len(encoded) + 1
            if size > limits.max_bytes:
                raise _too_large(limits)
            parts.append(encoded if count == 0 else b"," + encoded)
            count += 1
        if truncated:
            break
        if time.monotonic() > deadline:
            raise _timeout(limits)
        # a few wide rows per fetch, many narrow ones: Python never holds much past the cap
        average = max(1, (size - len(head)) // max(count, 1))
        batch = max(1, min(MAX_BATCH_ROWS, (limits.max_bytes - size) // (4 * average)))
    parts.append(b'],"truncated":' + (b"true" if truncated else b"false") + b"}")
    return b"".join(parts)


def _too_large(limits: SqlLimits) -> PayloadTooLarge:
    return PayloadTooLarge(f"the answer is larger than {limits.max_bytes} bytes (the "
                           "sql_max_bytes setting) and was not sent; select fewer or narrower "
                           "columns, or add a LIMIT", code="answer_too_large")


def _timeout(limits: SqlLimits) -> BadRequest:
    return BadRequest(f"query took longer than {limits.timeout_s:g} s (the sql_timeout_s "
                      "setting) and was stopped", code="query_timeout")


def run_read_only(con: Connection, sql: str, *, max_rows: int = 10_000,
                  timeout_s: float = 10.0,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    answer: dict[str, Any] = orjson.loads(
        answer_json(con, sql, SqlLimits(max_rows=max_rows, max_bytes=max_bytes,
                                        timeout_s=timeout_s)))
    return answer
