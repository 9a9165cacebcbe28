"""GET /admin/interactions (the review queue and browse list), GET /admin/interactions/{id},
and POST /admin/interactions/usage (how many of some ids are logged, and their cost).

The list answers previews (storage/previews.py): each item's bodies cut in the database, its
strings to `preview_text_chars` characters, `truncated` set when anything was cut, and the page
stopped before the item that would take it past `list_page_max_bytes`. The item itself is whole
up to `item_full_max_chars` of logged bodies (`item_item`).

Each item is written on its own (`row_json`): an item whose stored value cannot be written as
JSON is answered as `{"id", "error": "unreadable stored value"}` (and logged); the others are
served.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
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
    row_bytes,
    row_json,
)
from proxy.admin.review_params import review_query
from proxy.auth import Role
from storage.db import Connection
from storage.interactions import MAX_USAGE_IDS, usage_of
from storage.items import list_review_items, review_item
from storage.previews import PreviewLimits
from tuneloop.config import Settings
from tuneloop.errors import BadRequest


def preview_limits(settings: Settings) -> PreviewLimits:
    return PreviewLimits(field_chars=settings.preview_field_chars,
                         text_chars=settings.preview_text_chars)


def item_item(con: Connection, settings: Settings, interaction_id: str) -> dict[str, Any]:
    """GET /admin/interactions/{id} (and the queue's next item) under the settings' caps."""
    return review_item(con, interaction_id, full_max_chars=settings.item_full_max_chars,
                       limits=preview_limits(settings))


async def list_items(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    refuse_repeated(request.query_params, ("limit", "cursor", "compact"))
    query = dataclasses.replace(review_query(request.query_params),
                                search_budget_s=ctx.settings.search_page_budget_s)
    limit, cursor = page_params(request.query_params)
    compact = bool_param(request.query_params, "compact") is True
    limits = preview_limits(ctx.settings)
    items, next_cursor = await ctx.db.read(
        lambda con: list_review_items(con, query, limit=limit, cursor=cursor, compact=compact,
                                      limits=limits)
    )
    page: list[orjson.Fragment] = []
    size = 0
    for item in items:
        written = row_bytes(item)
        size += len(written)
        if page and size > ctx.settings.list_page_max_bytes:
            next_cursor = items[len(page) - 1]["id"]  # the next page starts after the last
            break
        page.append(orjson.Fragment(written))
    return json_response({"items": page, "next_cursor": next_cursor})


async def get_item(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    interaction_id = request.path_params["interaction_id"]
    item = await ctx.db.read(lambda con: item_item(con, ctx.settings, interaction_id))
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
