"""The queue as reviewers work it: next item (claimed), claim/renew, release, progress.
The API is described in proxy/admin/review.py's docstring."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import json_object, json_response, refuse_repeated, row_json
from proxy.admin.interactions import item_item
from proxy.admin.review_params import filter_from_json, review_query, reviewer_name
from proxy.auth import Role
from proxy.context import ProxyContext, context_of
from storage.claims import claim, release
from storage.progress import progress
from storage.queue import ReviewQuery, next_item, search_candidates
from tuneloop.errors import BadRequest

MAX_SKIP = 10_000


def _reviewer_context(request: Request) -> ProxyContext:
    ctx = context_of(request)
    ctx.admin.require(request.headers, Role.REVIEWER)
    return ctx


def _queue_filter(body: dict[str, Any]) -> ReviewQuery:
    value = body.get("filter")
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BadRequest("filter must be an object of list filters", param="filter")
    return filter_from_json({"review": "pending", **value})


def _skip_of(body: dict[str, Any]) -> list[str]:
    skip = body.get("skip", [])
    if not isinstance(skip, list) or len(skip) > MAX_SKIP \
            or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in skip):
        raise BadRequest(f"skip must be a list of at most {MAX_SKIP} interaction ids",
                         param="skip")
    return skip


def _want_progress(body: dict[str, Any]) -> bool:
    value = body.get("progress", False)
    if not isinstance(value, bool):
        raise BadRequest("progress must be true or false", param="progress")
    return value


async def next_queue_item(request: Request) -> Response:
    ctx = _reviewer_context(request)
    body = await json_object(request)
    reviewer = reviewer_name(body, request)
    query = dataclasses.replace(_queue_filter(body),
                                search_budget_s=ctx.settings.search_page_budget_s)
    skip, with_progress = _skip_of(body), _want_progress(body)
    ttl_s = ctx.settings.review_claim_s
    candidates = None if query.q is None else await ctx.db.read(
        lambda con: search_candidates(con, query, reviewer, skip=skip))
    taken = await ctx.db.write(lambda con: next_item(con, query, reviewer, ttl_s, skip=skip,
                                                     candidates=candidates))
    answer: dict[str, Any] = {"item": None}
    if taken is not None:
        item = await ctx.db.read(lambda con: item_item(con, ctx.settings, taken.interaction_id))
        item.update(taken.to_json())  # the claim as written, even if a read lags
        answer["item"] = row_json(item)
    if with_progress:
        answer["progress"] = await ctx.db.read(lambda con: progress(con, query, reviewer))
    return json_response(answer)


async def claim_item(request: Request) -> Response:
    ctx = _reviewer_context(request)
    body = await json_object(request)
    reviewer = reviewer_name(body, request)
    interaction_id = request.path_params["interaction_id"]
    ttl_s = ctx.settings.review_claim_s
    taken = await ctx.db.write(lambda con: claim(con, interaction_id, reviewer, ttl_s))
    return json_response({"id": interaction_id, **taken.to_json()})


async def release_item(request: Request) -> Response:
    ctx = _reviewer_context(request)
    body = await json_object(request)
    reviewer = reviewer_name(body, request)
    interaction_id = request.path_params["interaction_id"]
    released = await ctx.db.write(lambda con: release(con, [interaction_id], reviewer))
    return json_response({"id": interaction_id, "released": bool(released)})


async def queue_progress(request: Request) -> Response:
    ctx = _reviewer_context(request)
    params = request.query_params
    refuse_repeated(params, ("reviewer", "since"))
    reviewer = reviewer_name({"reviewer": params.get("reviewer")}, request)
    since_text = params.get("since")
    since = None
    if since_text:
        try:
            since = datetime.fromisoformat(since_text)
        except ValueError:
            raise BadRequest("since must be an ISO 8601 time with its offset",
                             param="since") from None
        if since.tzinfo is None:
            raise BadRequest("since must carry its UTC offset", param="since")
    pending = [(k, v) for k, v in params.multi_items() if k != "review"]
    query = dataclasses.replace(review_query(QueryParams([*pending, ("review", "pending")])),
                                search_budget_s=ctx.settings.search_page_budget_s)
    return json_response(await ctx.db.read(
        lambda con: progress(con, query, reviewer, since=since)))


ROUTES = [
    Route("/admin/queue/next", next_queue_item, methods=["POST"]),
    Route("/admin/queue/progress", queue_progress, methods=["GET"]),
    Route("/admin/interactions/{interaction_id}/claim", claim_item, methods=["POST"]),
    Route("/admin/interactions/{interaction_id}/release", release_item, methods=["POST"]),
]
