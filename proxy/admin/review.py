"""Review actions, claims and progress: the admin API the review app uses.

Every route takes the reviewer or admin token (`Authorization: Bearer ...`); every write names
the reviewer: `"reviewer": "ann"` in the JSON body (or the `x-tuneloop-actor` header), and the
role of the token is recorded. Errors are OpenAI-shaped `{"error": {"message", "type", "param",
"code"}}`; `AdminClient` raises them as `tuneloop.errors` classes (409 Conflict, 422
NotTrainable, ...) with `.code`.

Claims (leases, `settings.review_claim_s`, default 300 s; stored, so they survive restarts)
- POST /admin/queue/next `{"reviewer", "filter"?: {list filters, default {"review":"pending"}},
  "skip"?: [ids], "progress"?: bool}` -> `{"item": <as GET /admin/interactions/{id}> | null,
  "progress"?: <as /admin/queue/progress>}`. Gives the reviewer's own live claim if it still
  matches and is not in `skip`, else the newest matching item no other reviewer holds; claims
  it (until `item.claimed_until`) and releases the reviewer's other claims. Two reviewers
  asking at once get different items. `null`: nothing left. Skip = call next with the id in
  `skip` (its claim is released).
- POST /admin/interactions/{id}/claim `{"reviewer"}` -> `{"id", "claimed_by", "claimed_until"}`:
  take or renew (the holder calling again extends it; call it while the reviewer works).
  409 code `claimed` while another reviewer holds it (the message names them and the expiry);
  404 unknown id.
- POST /admin/interactions/{id}/release `{"reviewer"}` -> `{"id", "released": bool}` (only the
  caller's own claim is released).
- Items (GET /admin/interactions and /admin/interactions/{id}) carry `claimed_by` and
  `claimed_until` (null when no live claim), `trainable`, `untrainable_reason` (null or one of
  not_reviewable, upstream_error, client_disconnected, upstream_cut, timeout, no_answer) and
  `untrainable_message`.

Trainable items only
- An item is trainable when its current messages (the edit, else the logged ones) end with a
  non-empty assistant answer (text, parts or tool calls); without an edit, an upstream error
  (status >= 400) or a stream cut/left/timed out never is. `review=pending` lists only trainable
  items unless `trainable=any|false` is given (list filter, also in bulk `filter`).
- A review action that would leave an item approved without a final answer (approve; edit or
  revise with an empty answer) is refused: 422 code `not_trainable`, message saying why and
  "edit the item to supply the assistant's answer (action edit), or reject it".

Review actions
- POST /admin/interactions/{id}/review `{"action": approve|reject|edit|needs_work|revise,
  "reviewer", "expected_revision", "reason"?, "messages"? (edit, revise)}` -> `{"id", "status":
  "ok", "review", "revision"}`. 409 `stale_revision` (someone reviewed it meanwhile), 409
  `claimed` (another reviewer holds a live claim: their name and expiry in the message; nothing
  is overwritten), 422 `not_trainable`, 400 `not_reviewable`, 404. Success releases the
  reviewer's claim on the item.
- POST /admin/interactions/{id}/undo `{"reviewer", "expected_revision"?}` -> `{"id", "status",
  "review", "revision", "claimed_by", "claimed_until"}`: the item is claimed for the reviewer
  again (they are back on it). 409 `claimed` while another reviewer holds it, 409
  `nothing_to_undo`, 409 `stale_revision`.
- POST /admin/interactions/bulk-review `{"action": approve|reject|needs_work, "reviewer",
  "ids" | "filter", "reason"?, "expected_revisions"?, "max_items"?}` -> `{"results": [{"id",
  "status", ...}], "counts": {status: n}, "skipped_untrainable": n, "skipped_claimed": n,
  "truncated"}`; per-item statuses ok, conflict, not_found, not_reviewable, not_trainable,
  claimed (skipped items are unchanged).
- POST /admin/interactions/{id}/tags, /admin/interactions/bulk-tags: `{"reviewer", "add",
  "remove"}`.

Progress
- GET /admin/queue/progress?reviewer=ann[&since=ISO][&list filters] -> `{"pending", "untrainable",
  "total", "claimed_by_others", "reviewed_by_you", "reviewed", "since", "exact"}`: exact counts
  (see storage.progress); `reviewed*` count items whose current state was set since `since`
  (default today 00:00 UTC). Also embedded in /admin/queue/next with `"progress": true`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin import claims_api
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
from storage.claims import claim
from storage.messages import NotReviewable
from storage.queue import find_ids
from storage.review import BULK_ACTIONS, ReviewAction, ReviewResult, apply_reviews, undo
from storage.tags import change_tags, tags_of, validate_tags
from tuneloop.errors import BadRequest, Conflict, NotFound, NotTrainable

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
    if result.status == "claimed":
        raise Conflict(message, code="claimed")
    if result.status == "not_trainable":
        raise NotTrainable(message)


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
    ttl_s = ctx.settings.review_claim_s

    def run(con: Any) -> dict[str, Any]:
        result = undo(con, interaction_id, reviewer, role=role, expected_revision=expected)
        # the item is the reviewer's again: they are back on it, nobody else takes it meanwhile
        return {**result.to_json(), **claim(con, interaction_id, reviewer, ttl_s).to_json()}

    return json_response(await ctx.db.write(run))


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
    counts = Counter(r.status for r in results)
    return json_response({
        "results": [r.to_json() for r in results],
        "counts": dict(counts),
        "skipped_untrainable": counts["not_trainable"],
        "skipped_claimed": counts["claimed"],
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
        current = (tags_of(con, interaction_id)
                   if change_tags(con, [interaction_id], add, remove, actor) else None)
        if current is None:
            raise NotFound(f"no interaction with id {interaction_id!r}")
        return current

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
    *claims_api.ROUTES,
]
