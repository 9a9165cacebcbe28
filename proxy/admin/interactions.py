"""GET /admin/interactions and GET /admin/interactions/{id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, interaction_filter, json_response, page_params
from proxy.auth import Role
from storage.interactions import get_interaction, list_interactions


async def list_items(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    flt = interaction_filter(request.query_params)
    limit, cursor = page_params(request.query_params)
    items, next_cursor = await ctx.db.read(
        lambda con: list_interactions(con, flt, limit=limit, cursor=cursor)
    )
    return json_response({"items": items, "next_cursor": next_cursor})


async def get_item(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    interaction_id = request.path_params["interaction_id"]
    item = await ctx.db.read(lambda con: get_interaction(con, interaction_id))
    return json_response(item)


ROUTES = [
    Route("/admin/interactions", list_items, methods=["GET"]),
    Route("/admin/interactions/{interaction_id}", get_item, methods=["GET"]),
]
