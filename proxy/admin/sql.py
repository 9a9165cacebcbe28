"""POST /admin/sql: read-only SQL for `tuneloop sql` (reviewer or admin).

One query at a time per token (a second one while the first runs gets 429), on a cursor of its
own in a worker thread (not the reader pool the UI and the admin API share), serialized there
too, and bounded by the `sql_max_bytes`, `sql_max_rows` and `sql_timeout_s` settings.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import json_object
from proxy.auth import Role
from proxy.context import context_of
from storage.sql import SqlLimits, answer_json, sql_connection
from storage.store import Store
from tuneloop.errors import BadRequest, TooManyRequests


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


def _answer(db: Store, sql: str, limits: SqlLimits, sql_url: str | None) -> bytes:
    cursor = sql_connection(db, sql_url)
    try:
        return answer_json(cursor, sql, limits)
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
    gate = gate_of(request)
    if role in gate.running:
        raise TooManyRequests("this token already has a query running; one at a time (a "
                              f"query stops after {settings.sql_timeout_s:g} s)",
                              code="query_running")
    limits = SqlLimits(max_rows=max_rows, max_bytes=settings.sql_max_bytes,
                       timeout_s=settings.sql_timeout_s)
    gate.running.add(role)
    sql_url = settings.sql_db.get_secret_value() if settings.sql_db is not None else None
    work = asyncio.ensure_future(asyncio.to_thread(_answer, ctx.db, sql, limits, sql_url))
    # the token stays busy until the query itself ends, even if this request is cancelled
    work.add_done_callback(lambda _: gate.running.discard(role))
    answer = await asyncio.shield(work)
    return Response(answer, media_type="application/json")


ROUTES = [Route("/admin/sql", run_sql, methods=["POST"])]
