"""Parsing and validation of the review API's inputs (query parameters and JSON bodies)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from proxy.admin.common import float_param, interaction_filter, refuse_repeated, text_param
from storage.messages import validate_messages
from storage.queue import ReviewQuery
from storage.review import ACTION_STATES, MESSAGE_ACTIONS, STATES
from storage.search import scope_bits
from tuneloop.errors import BadRequest

FILTER_KEYS = ("review", "model", "tag", "user", "session", "since", "until", "q", "min_score",
               "has_error", "status_code", "traffic", "endpoint", "trainable",
               "q_in")
# the filters whose JSON value must be text: a number there is a client's mistake, not a word
TEXT_KEYS = frozenset(FILTER_KEYS) - {"min_score", "has_error", "status_code", "trainable"}
TRAINABLE = {"true": True, "false": False, "any": None}
MAX_REASON = 10_000
MAX_NAME = 128


def review_query(params: QueryParams) -> ReviewQuery:
    """The filters of GET /admin/interactions (and of bulk-review's `filter`)."""
    refuse_repeated(params, FILTER_KEYS)
    review = text_param(params, "review")
    if review is not None and review not in STATES:
        raise BadRequest(f"review must be one of {', '.join(STATES)}", param="review")
    min_score = float_param(params, "min_score")
    if min_score is not None and not -1 <= min_score <= 1:
        raise BadRequest("min_score must be between -1 and 1", param="min_score")
    # an empty q is refused like a blank one (no words), not taken as no search: the app and
    # the client leave q out when there is nothing to search for
    q = "" if params.get("q") == "" else text_param(params, "q")
    trainable_text = text_param(params, "trainable")
    if trainable_text is not None and trainable_text not in TRAINABLE:
        raise BadRequest("trainable must be true (only items with a final answer), false "
                         "(only those without) or any", param="trainable")
    base = dataclasses.replace(interaction_filter(params), tag=None)
    # the pending queue shows only what can be approved, unless asked otherwise (or asked for
    # upstream errors by has_error / status_code)
    asks_errors = base.has_error is True or (base.status_code or 0) >= 400
    trainable = TRAINABLE[trainable_text] if trainable_text is not None \
        else (True if review == "pending" and not asks_errors else None)
    query = ReviewQuery(
        # reviewer tags live beside the logged ones, so the tag filter is the review query's
        base=base,
        review=review, tag=text_param(params, "tag"), q=q, min_score=min_score,
        trainable=trainable,
    )
    q_in = text_param(params, "q_in")  # the fields q searches: conversation (default),
    if q_in is not None:  # answers or all (with the system prompt); see storage.search
        scope_bits(q_in)
        query = dataclasses.replace(query, q_in=q_in)
    query.terms  # noqa: B018  (a q without words is a 400 now, not at query time)
    return query


def filter_from_json(value: Any) -> ReviewQuery:
    """bulk-review's `filter` object: the list filters as JSON; unknown keys are refused so a
    typo can't widen a bulk action to everything."""
    if not isinstance(value, dict) or not value:
        raise BadRequest("filter must be a non-empty object of list filters", param="filter")
    unknown = value.keys() - set(FILTER_KEYS)
    if unknown:
        raise BadRequest(f"unknown filter keys {sorted(unknown)}; allowed: "
                         f"{', '.join(FILTER_KEYS)}", param="filter")
    as_text: dict[str, str] = {}
    for key, item in value.items():
        if key in TEXT_KEYS and item is not None and not isinstance(item, str):
            raise BadRequest(f"filter.{key} must be a string", param="filter")
        if isinstance(item, bool):
            as_text[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            as_text[key] = str(item)
        elif item is not None:
            raise BadRequest(f"filter.{key} must be a string, number or boolean", param="filter")
    return review_query(QueryParams(as_text))


def reviewer_name(body: Mapping[str, Any], request: Request) -> str:
    name = body.get("reviewer", request.headers.get("x-tuneloop-actor"))
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME \
            or any(ord(c) < 32 for c in name):
        raise BadRequest(f"reviewer must be your name (1-{MAX_NAME} printable characters)",
                         param="reviewer")
    return name.strip()


def reason_of(body: Mapping[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is None or reason == "":
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadRequest(f"reason must be a string of at most {MAX_REASON} characters",
                         param="reason")
    return reason


def revision_of(body: Mapping[str, Any], *, required: bool) -> int | None:
    value = body.get("expected_revision")
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest("expected_revision must be the item's current revision (an integer "
                         ">= 0, 0 before any review)", param="expected_revision")
    return value


def action_of(body: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    action = body.get("action")
    if action not in allowed:
        raise BadRequest(f"action must be one of {', '.join(allowed)}", param="action")
    assert isinstance(action, str)
    return action


def messages_for(action: str, body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    if action in MESSAGE_ACTIONS:
        if body.get("messages") is None:
            raise BadRequest(f"{action} needs messages: the corrected message list",
                             param="messages")
        return validate_messages(body["messages"])
    if body.get("messages") is not None:
        raise BadRequest(f"{action} takes no messages; use edit (approve) or revise (keep the "
                         "state) to change them", param="messages")
    return None


REVIEW_ACTIONS = tuple(ACTION_STATES)
