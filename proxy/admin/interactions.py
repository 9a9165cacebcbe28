"""GET /admin/interactions (the review queue and browse list), GET /admin/interactions/{id},
and POST /admin/interactions/usage (how many of some ids are logged, and their cost).

Each item is written on its own (`row_json`): an item whose stored value cannot be written as
JSON is answered as `{"id", "error": "unreadable stored value"}` (and logged); the others are
served.
"""

from __future__ import annotations

import dataclasses

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import (
    authorize,
    bool_param,
    json_object,
    json_response,
    page_params,
    refuse_repeated,
    row_json,
)
from proxy.admin.review_params import review_query
from proxy.auth import Role
from storage.interactions import MAX_USAGE_IDS, usage_of
from storage.items import list_review_items, review_item
from tuneloop.errors import BadRequest


async def list_items(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    refuse_repeated(request.query_params, ("limit", "cursor", "compact"))
    query = dataclasses.replace(review_query(request.query_params),
                                search_budget_s=ctx.settings.search_page_budget_s)
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


async def usage(request: Request) -> Response:
    """`{"ids": [...]}` -> `{"logged": n, "cost_usd": total or null}` (e.g. what a
    `tuneloop synthesize` run cost, once the proxy has logged its requests)."""
    ctx = authorize(request, Role.REVIEWER)
    ids = (await json_object(request)).get("ids")
    if not isinstance(ids, list) or not 0 < len(ids) <= MAX_USAGE_IDS \
            or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
        raise BadRequest(f"ids must be a list of 1-{MAX_USAGE_IDS} interaction ids", param="ids")
    return json_response(await ctx.db.read(lambda con: usage_of(con, ids)))


ROUTES = [
    Route("/admin/interactions/usage", usage, methods=["POST"]),
    Route("/admin/interactions", list_items, methods=["GET"]),
    Route("/admin/interactions/{interaction_id}", get_item, methods=["GET"]),
]
