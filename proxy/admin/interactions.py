"""GET /admin/interactions (the review queue and browse list) and GET /admin/interactions/{id}.

Each item is written on its own (`row_json`): an item whose stored value cannot be written as
JSON is answered as `{"id", "error": "unreadable stored value"}` (and logged); the others are
served.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, bool_param, json_response, page_params, row_json
from proxy.admin.review_params import review_query
from proxy.auth import Role
from storage.items import list_review_items, review_item


async def list_items(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    query = review_query(request.query_params)
    limit, cursor = page_params(request.query_params)
    compact = bool_param(request.query_params, "compact") is True
    items, next_cursor = await ctx.db.read(
        lambda con: list_review_items(con, query, limit=limit, cursor=cursor, compact=compact)
    )
    return json_response({"items": [row_json(item) for item in items],
                          "next_cursor": next_cursor})


async def get_item(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    interaction_id = request.path_params["interaction_id"]
    item = await ctx.db.read(lambda con: review_item(con, interaction_id))
    return json_response(row_json(item))


ROUTES = [
    Route("/admin/interactions", list_items, methods=["GET"]),
    Route("/admin/interactions/{interaction_id}", get_item, methods=["GET"]),
]
