"""GET /admin/stats: review statistics for the Stats page and scripts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, json_response, time_param
from proxy.auth import Role
from storage.stats import review_stats


async def stats(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    since = time_param(request.query_params, "since")
    until = time_param(request.query_params, "until")
    top = ctx.settings.stats_top_models
    return json_response(await ctx.db.read(
        lambda con: review_stats(con, since, until, top_models=top)))


ROUTES = [Route("/admin/stats", stats, methods=["GET"])]
