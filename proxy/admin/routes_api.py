"""GET/PUT /admin/routes (the alias table) and GET /admin/routes/history."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, json_body, json_response, text_param
from proxy.auth import Role
from proxy.context import ProxyContext
from proxy.routing import parse_route_table
from storage.routes import load_routes, replace_routes, route_history


async def reload_routes(ctx: ProxyContext) -> None:
    raw = await ctx.db.read(load_routes)
    ctx.router.replace(parse_route_table(raw))


async def get_routes(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    return json_response(await ctx.db.read(load_routes))


async def put_routes(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    table = parse_route_table(await json_body(request))
    specs = {alias: spec.model_dump(exclude_none=True) for alias, spec in table.items()}
    actor = request.headers.get("x-tuneloop-actor", "admin")[:128]
    await ctx.db.write(lambda con: replace_routes(con, specs, actor))
    ctx.router.replace(table)
    return json_response(specs)


async def get_history(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    alias = text_param(request.query_params, "alias")
    return json_response({"items": await ctx.db.read(lambda con: route_history(con, alias))})


ROUTES = [
    Route("/admin/routes", get_routes, methods=["GET"]),
    Route("/admin/routes", put_routes, methods=["PUT"]),
    Route("/admin/routes/history", get_history, methods=["GET"]),
]
