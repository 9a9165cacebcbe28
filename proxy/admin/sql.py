"""POST /admin/sql: read-only SQL for `tuneloop sql` (reviewer or admin)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, json_object, json_response
from proxy.auth import Role
from storage.sql import run_read_only
from tuneloop.errors import BadRequest


async def run_sql(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    body = await json_object(request)
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise BadRequest("send {\"sql\": \"SELECT ...\"}", param="sql")
    max_rows = body.get("max_rows", 10_000)
    if not isinstance(max_rows, int) or not 1 <= max_rows <= 100_000:
        raise BadRequest("max_rows is an integer from 1 to 100000", param="max_rows")
    result = await ctx.db.read(lambda con: run_read_only(con, sql, max_rows=max_rows))
    return json_response(result)


ROUTES = [Route("/admin/sql", run_sql, methods=["POST"])]
