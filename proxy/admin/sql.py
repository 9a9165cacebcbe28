"""POST /admin/sql: read-only SQL for `tuneloop sql` (reviewer or admin).

One query at a time per token (a second one while the first runs gets 429): in this replica by
its `SqlGate`, and on Postgres across every replica by an advisory lock the query's session
holds (storage/sql.py `take_query_turn`), so N replicas can't run N of one token's queries at
once. Each runs on a cursor of its own in a worker thread (not the reader pool the UI and the
admin API share), serialized there too, and bounded by the `sql_max_bytes`, `sql_max_rows` and
`sql_timeout_s` settings. On Postgres a role with more than read rights (a superuser: what
docker's postgres image makes POSTGRES_USER) is refused with 503
`sql_role_unsafe` (storage/sql_role.py).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import json_object
from proxy.auth import Role
from proxy.context import context_of
from storage.backend.pg_connection import PgConnection
from storage.sql import (
    SqlLimits,
    answer_json,
    end_query_turn,
    sql_connection,
    take_query_turn,
)
from storage.sql_role import sql_role_problem
from storage.store import Store
from tuneloop.errors import BadRequest, StorageError, TooManyRequests

log = logging.getLogger("tuneloop.proxy")


class SqlGate:
    """The tokens (by role: one token each) with a query running."""

    def __init__(self) -> None:
        self.running: set[Role] = set()


def gate_of(request: Request) -> SqlGate:
    gate: SqlGate | None = getattr(request.app.state, "sql_gate", None)
    if gate is None:
        gate = SqlGate()
        request.app.state.sql_gate = gate
    return gate


def _busy(limits: SqlLimits, where: str) -> TooManyRequests:
    return TooManyRequests(f"this token already has a query running{where}; one at a time (a "
                           f"query stops after {limits.timeout_s:g} s)", code="query_running")


def _answer(db: Store, sql: str, limits: SqlLimits, sql_url: str | None, role: Role) -> bytes:
    cursor = sql_connection(db, sql_url)
    try:
        if isinstance(cursor, PgConnection):  # checked per query: a role's rights can change
            problem = sql_role_problem(cursor)
            if problem is not None:
                raise StorageError(f"read-only SQL is refused on this replica: {problem}",
                                   code="sql_role_unsafe")
        holder = f"sql:{role.name.lower()}"
        if not take_query_turn(cursor, holder):
            raise _busy(limits, " (on another replica)")
        try:
            return answer_json(cursor, sql, limits)
        finally:
            end_query_turn(cursor, holder)
    finally:
        cursor.close()


async def run_sql(request: Request) -> Response:
    ctx = context_of(request)
    role = ctx.admin.require(request.headers, Role.REVIEWER)
    body = await json_object(request)
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise BadRequest("send {\"sql\": \"SELECT ...\"}", param="sql")
    settings = ctx.settings
    max_rows = body.get("max_rows", min(10_000, settings.sql_max_rows))
    if (not isinstance(max_rows, int) or isinstance(max_rows, bool)
            or not 1 <= max_rows <= settings.sql_max_rows):
        raise BadRequest(f"max_rows is an integer from 1 to {settings.sql_max_rows}",
                         param="max_rows")
    limits = SqlLimits(max_rows=max_rows, max_bytes=settings.sql_max_bytes,
                       timeout_s=settings.sql_timeout_s)
    gate = gate_of(request)
    if role in gate.running:
        raise _busy(limits, "")
    gate.running.add(role)
    sql_url = settings.sql_db.get_secret_value() if settings.sql_db is not None else None
    work = asyncio.ensure_future(asyncio.to_thread(_answer, ctx.db, sql, limits, sql_url, role))
    # the token stays busy until the query itself ends, even if this request is cancelled
    work.add_done_callback(lambda _: gate.running.discard(role))
    answer = await asyncio.shield(work)
    return Response(answer, media_type="application/json")


def warn_if_sql_role_unsafe(db: Store, sql_url: str | None) -> None:
    """At start: say loudly when read-only SQL would be refused for its role."""
    try:
        con = sql_connection(db, sql_url)
    except StorageError as exc:  # a wrong sql_db: each query answers 503 and says so
        log.warning("read-only SQL: %s", exc.message)
        return
    try:
        if isinstance(con, PgConnection):
            problem = sql_role_problem(con)
            if problem is not None:
                log.warning("POST /admin/sql (tuneloop sql) is refused: %s", problem)
    finally:
        con.close()


ROUTES = [Route("/admin/sql", run_sql, methods=["POST"])]
