"""Read-only SQL for `tuneloop sql`: one SELECT statement, bounded in rows and time.

The connection has external access switched off (no file reads, COPY, ATTACH or extensions);
on top of that only a single SELECT is accepted, and it runs in a transaction that is rolled
back.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import uuid
from typing import Any

import duckdb

from storage.db import Connection
from tuneloop.errors import BadRequest, Forbidden


def check_read_only(sql: str) -> None:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadRequest(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise BadRequest(f"send exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise Forbidden(f"only SELECT is allowed here, not {kind.name}", code="read_only")


def _jsonable(value: Any) -> Any:
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
    return value


def run_read_only(con: Connection, sql: str, *, max_rows: int = 10_000,
                  timeout_s: float = 30.0) -> dict[str, Any]:
    check_read_only(sql)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    con.execute("BEGIN TRANSACTION")
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(max_rows + 1)
    except duckdb.InterruptException as exc:
        raise BadRequest(f"query took longer than {timeout_s:g} s and was stopped") from exc
    except duckdb.PermissionException as exc:
        raise Forbidden(f"not allowed: {exc}", code="read_only") from exc
    except duckdb.Error as exc:
        raise BadRequest(f"query failed: {exc}") from exc
    finally:
        timer.cancel()
        con.execute("ROLLBACK")
    return {
        "columns": columns,
        "rows": [[_jsonable(v) for v in row] for row in rows[:max_rows]],
        "truncated": len(rows) > max_rows,
    }
