"""Interactions as reviewers see them: the logged row plus review state, the original and
current message lists, effective tags, feedback and (for one item) the revision history."""

from __future__ import annotations

from typing import Any

from storage.claims import live_claims
from storage.db import Connection
from storage.feedback import feedback_of, feedback_summary
from storage.interactions import get_interaction
from storage.messages import is_reviewable, messages_of
from storage.previews import (
    DEFAULT_LIMITS,
    PreviewLimits,
    clip_strings,
    mark,
    preview_rows,
    stored_chars,
)
from storage.queue import ReviewQuery, find_ids
from storage.review import review_states, revisions_of
from storage.tags import effective_tags
from storage.trainable import REASONS, untrainable_reason
from tuneloop.errors import NotFound


def with_review(con: Connection, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add review state, message lists, effective tags and feedback to interaction rows."""
    ids = [item["id"] for item in items]
    states = review_states(con, ids)
    scores = feedback_summary(con, ids)
    tags = effective_tags(con, {item["id"]: item.get("tags") for item in items})
    claims = live_claims(con, ids)
    for item in items:
        state = states.get(item["id"])
        reviewable = is_reviewable(item["endpoint"])
        item["reviewable"] = reviewable
        item["review"] = state["review"] if state else ("pending" if reviewable else None)
        item["revision"] = state["revision"] if state else 0
        item["reviewed_by"] = state["reviewed_by"] if state else None
        item["reviewed_at"] = state["reviewed_at"] if state else None
        item["logged_tags"] = item.get("tags") or []
        item["tags"] = tags[item["id"]]
        item["score"] = scores.get(item["id"], {}).get("score")
        item["feedback_count"] = scores.get(item["id"], {}).get("feedback_count", 0)
        original, alternatives = (messages_of(item["endpoint"], item.get("request"),
                                              item.get("response"))
                                  if reviewable else (None, []))
        item["original"], item["alternatives"] = original, alternatives
        edited = state["messages"] if state else None
        item["edited"] = edited is not None
        item["messages"] = edited if edited is not None else original
        reason = untrainable_reason(item["endpoint"], item.get("status_code"),
                                    item.get("finish"), item.get("request"),
                                    item.get("response"), edited, original)
        item["trainable"] = reason is None
        item["untrainable_reason"] = reason
        item["untrainable_message"] = None if reason is None else REASONS[reason]
        claim = claims.get(item["id"])
        item["claimed_by"] = claim.reviewer if claim else None
        item["claimed_until"] = claim.expires_at.isoformat() if claim else None
    return items


def list_review_items(con: Connection, query: ReviewQuery, *, limit: int = 50,
                      cursor: str | None = None, compact: bool = False,
                      limits: PreviewLimits = DEFAULT_LIMITS
                      ) -> tuple[list[dict[str, Any]], str | None]:
    """One page of GET /admin/interactions, each item a preview (storage.previews: its
    bodies cut in the database, its strings to `limits.text_chars`, `truncated` says so).
    `compact` leaves out the logged request, the request its target received and the
    response (the messages carry their content)."""
    ids, next_cursor = find_ids(con, query, limit=limit, cursor=cursor)
    if not ids:
        return [], next_cursor
    items = with_review(con, preview_rows(con, ids, limits))
    for item in items:
        item.pop("original", None)
        _clip_messages(item, limits.text_chars)
        if compact:
            item.pop("request", None)
            item.pop("sent_request", None)
            item.pop("response", None)
    return items, next_cursor


def _clip_messages(item: dict[str, Any], chars: int) -> None:
    """A reviewer's edit (messages of the review state) cut like the logged bodies."""
    for key in ("messages", "alternatives"):
        item[key], cut = clip_strings(item.get(key), chars)
        if cut and key not in item["truncated_fields"]:
            item["truncated"] = True
            item["truncated_fields"].append(key)


def review_item(con: Connection, interaction_id: str, *,
                full_max_chars: int | None = None,
                limits: PreviewLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """One interaction as logged, its original and current message lists, its revisions.
    Its bodies are read whole once when they hold at most `full_max_chars` characters
    together (None: any size); a bigger one is answered as a preview, like the list's,
    with `truncated` set (the stored row is untouched)."""
    sizes = stored_chars(con, [interaction_id]).get(interaction_id)
    if sizes is None:
        raise NotFound(f"no interaction with id {interaction_id!r}")
    if full_max_chars is not None and sum(sizes.values()) > full_max_chars:
        item = with_review(con, preview_rows(con, [interaction_id], limits))[0]
        for key in ("messages", "original"):
            item[key], _ = clip_strings(item.get(key), limits.text_chars)
        item["truncated"] = True
        item["too_big"] = True
    else:
        item = with_review(con, [get_interaction(con, interaction_id)])[0]
        mark(item, [], sizes)
        item["too_big"] = False
    item["current"] = item["messages"]
    item["revisions"] = revisions_of(con, interaction_id) if item["revision"] else []
    item["feedback"] = feedback_of(con, interaction_id)
    return item
