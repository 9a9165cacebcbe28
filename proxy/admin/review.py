"""Review actions: POST /admin/interactions/{id}/review, /undo, /tags, and the bulk forms
/admin/interactions/bulk-review and /admin/interactions/bulk-tags. Reviewer or admin token;
every write records the reviewer's name and the role of the token used."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import json_object, json_response
from proxy.admin.review_params import (
    REVIEW_ACTIONS,
    action_of,
    filter_from_json,
    messages_for,
    reason_of,
    reviewer_name,
    revision_of,
)
from proxy.auth import Role
from proxy.context import ProxyContext, context_of
from storage.messages import NotReviewable
from storage.queue import find_ids
from storage.review import BULK_ACTIONS, ReviewAction, ReviewResult, apply_reviews, undo
from storage.tags import change_tags, effective_tags, validate_tags
from tuneloop.errors import BadRequest, Conflict, NotFound

MAX_BULK = 10_000
DEFAULT_FILTER_ITEMS = 1_000


def _reviewer_context(request: Request) -> tuple[ProxyContext, str]:
    ctx = context_of(request)
    role = ctx.admin.require(request.headers, Role.REVIEWER)
    return ctx, role.name.lower()


def _raise_for(result: ReviewResult) -> None:
    message = result.message or result.status
    if result.status == "not_found":
        raise NotFound(f"no interaction with id {result.id!r}")
    if result.status == "not_reviewable":
        raise NotReviewable(message)
    if result.status == "conflict":
        raise Conflict(message, code="stale_revision")


async def review(request: Request) -> Response:
    ctx, role = _reviewer_context(request)
    body = await json_object(request)
    action = action_of(body, REVIEW_ACTIONS)
    act = ReviewAction(
        interaction_id=request.path_params["interaction_id"], action=action,
        reviewer=reviewer_name(body, request), reason=reason_of(body),
        messages=messages_for(action, body), expected_revision=revision_of(body, required=True),
        role=role,
    )
    result = (await ctx.db.write(lambda con: apply_reviews(con, [act])))[0]
    _raise_for(result)
    return json_response(result.to_json())


async def undo_review(request: Request) -> Response:
    ctx, role = _reviewer_context(request)
    body = await json_object(request)
    interaction_id = request.path_params["interaction_id"]
    reviewer = reviewer_name(body, request)
    expected = revision_of(body, required=False)
    result = await ctx.db.write(
        lambda con: undo(con, interaction_id, reviewer, role=role, expected_revision=expected)
    )
    return json_response(result.to_json())


def _ids_of(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_BULK \
            or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids):
        raise BadRequest(f"ids must be a list of 1-{MAX_BULK} interaction ids", param="ids")
    return list(dict.fromkeys(ids))


async def bulk_review(request: Request) -> Response:
    ctx, role = _reviewer_context(request)
    body = await json_object(request)
    action = action_of(body, BULK_ACTIONS)
    reviewer, reason = reviewer_name(body, request), reason_of(body)
    if ("ids" in body) == ("filter" in body):
        raise BadRequest("send either ids or filter")
    expected = body.get("expected_revisions") or {}
    if not isinstance(expected, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in expected.values()):
        raise BadRequest("expected_revisions maps ids to revisions", param="expected_revisions")
    truncated = False
    if "ids" in body:
        ids = _ids_of(body)
    else:
        query = filter_from_json(body["filter"])
        max_items = body.get("max_items", DEFAULT_FILTER_ITEMS)
        if isinstance(max_items, bool) or not isinstance(max_items, int) \
                or not 1 <= max_items <= MAX_BULK:
            raise BadRequest(f"max_items is an integer from 1 to {MAX_BULK}", param="max_items")
        ids, more = await ctx.db.read(lambda con: find_ids(con, query, limit=max_items))
        truncated = more is not None
    actions = [ReviewAction(i, action, reviewer, reason, None, expected.get(i), role)
               for i in ids]
    results = await ctx.db.write(lambda con: apply_reviews(con, actions))
    return json_response({
        "results": [r.to_json() for r in results],
        "counts": dict(Counter(r.status for r in results)),
        "truncated": truncated,
    })


def _tag_changes(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    return validate_tags(body.get("add"), "add"), validate_tags(body.get("remove"), "remove")


async def tags(request: Request) -> Response:
    ctx, _role = _reviewer_context(request)
    body = await json_object(request)
    interaction_id = request.path_params["interaction_id"]
    add, remove = _tag_changes(body)
    actor = reviewer_name(body, request)

    def run(con: Any) -> list[str]:
        if not change_tags(con, [interaction_id], add, remove, actor):
            raise NotFound(f"no interaction with id {interaction_id!r}")
        logged = con.execute("SELECT tags FROM interactions WHERE id = ?",
                             [interaction_id]).fetchall()[0][0]
        return effective_tags(con, {interaction_id: logged})[interaction_id]

    return json_response({"id": interaction_id, "tags": await ctx.db.write(run)})


async def bulk_tags(request: Request) -> Response:
    ctx, _role = _reviewer_context(request)
    body = await json_object(request)
    ids = _ids_of(body)
    add, remove = _tag_changes(body)
    actor = reviewer_name(body, request)
    found = await ctx.db.write(lambda con: change_tags(con, ids, add, remove, actor))
    results = [{"id": i, "status": "ok" if i in found else "not_found"} for i in ids]
    return json_response({"results": results,
                          "counts": dict(Counter(r["status"] for r in results))})


ROUTES = [
    Route("/admin/interactions/bulk-review", bulk_review, methods=["POST"]),
    Route("/admin/interactions/bulk-tags", bulk_tags, methods=["POST"]),
    Route("/admin/interactions/{interaction_id}/review", review, methods=["POST"]),
    Route("/admin/interactions/{interaction_id}/undo", undo_review, methods=["POST"]),
    Route("/admin/interactions/{interaction_id}/tags", tags, methods=["POST"]),
]
