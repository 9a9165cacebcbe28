"""GET /admin/routes/{alias}/savings?days=&baseline= (reviewer or admin): per target of the
alias, tokens and cost per request, what each target saves against the baseline per request
and per day, and break-even (proxy.savings), over production traffic of the last `days` days
(default 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, int_param, json_response, text_param
from proxy.auth import Role
from proxy.savings import savings_report
from storage.routes import load_routes
from storage.savings import target_usage, training_of
from tuneloop.errors import BadRequest

DEFAULT_DAYS = 7
MAX_DAYS = 366


async def savings(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    alias: str = request.path_params["alias"]
    if not 0 < len(alias) <= 256:
        raise BadRequest("an alias is a string of 1-256 characters", param="alias")
    days = int_param(request.query_params, "days", default=DEFAULT_DAYS, low=1,
                     high=MAX_DAYS) or DEFAULT_DAYS
    baseline = text_param(request.query_params, "baseline", 256)
    until = datetime.now(UTC)
    since = until - timedelta(days=days)

    def read(con: Any) -> tuple[Any, Any, Any]:
        usage = target_usage(con, since, until, alias=alias)
        models = sorted({row["target"] for row in usage})
        return load_routes(con).get(alias), usage, training_of(con, models)

    spec, usage, training = await ctx.db.read(read)
    report = savings_report(alias, spec, usage, ctx.prices, training, days=days,
                            baseline=baseline)
    report |= {"since": since.isoformat(), "until": until.isoformat()}
    return json_response(report)


ROUTES = [Route("/admin/routes/{alias:path}/savings", savings, methods=["GET"])]
