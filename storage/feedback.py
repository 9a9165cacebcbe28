"""Feedback apps send about an interaction (`POST /v1/feedback`): a score in [-1, 1] and a
comment, so production thumbs up and down reach reviewers."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from storage.db import Connection
from storage.lookup import Bounds, bounded, ids_condition
from tuneloop.errors import BadRequest, Conflict, NotFound

MAX_COMMENT = 10_000

MAX_PER_SOURCE = 20
"""The default cap on feedback entries per (interaction, submitter) (`feedback_max_per_key`):
an app sends a thumbs up, a change of mind, a comment or two; one key posted 12,619 entries on
one interaction in 35 s (review r12y MED 5)."""


def validate_feedback(body: dict[str, Any]) -> tuple[str, float, str | None]:
    interaction_id = body.get("id")
    if not isinstance(interaction_id, str) or not 0 < len(interaction_id) <= 64:
        raise BadRequest("id must be the x-tuneloop-id of an interaction", param="id")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score) \
            or not -1 <= score <= 1:
        raise BadRequest("score must be a number from -1 to 1", param="score")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise BadRequest(f"comment must be a string of at most {MAX_COMMENT} characters",
                         param="comment")
    unknown = body.keys() - {"id", "score", "comment"}
    if unknown:
        raise BadRequest(f"unknown fields: {sorted(unknown)}")
    return interaction_id, float(score), comment


def add_feedback(con: Connection, interaction_id: str, score: float, comment: str | None,
                 source: str | None, now: datetime | None = None,
                 max_per_source: int = MAX_PER_SOURCE) -> dict[str, Any]:
    """Store one entry, unless `source` (a key's public prefix; None: the anonymous
    submitter) has `max_per_source` on the interaction already: Conflict, nothing stored.
    The count and the insert are exact only inside one store write (`db.write`: one at a
    time, across replicas on Postgres), where this runs."""
    exists = con.execute("SELECT 1 FROM interactions WHERE id = ?", [interaction_id]).fetchall()
    if not exists:
        raise NotFound(f"no interaction with id {interaction_id!r}")
    given = con.execute("SELECT count(*) FROM feedback WHERE interaction_id = ? "
                        "AND coalesce(source, '') = ?",
                        [interaction_id, source or ""]).fetchall()[0][0]
    if given >= max_per_source:
        raise Conflict(f"interaction {interaction_id!r} already has {max_per_source} feedback "
                       "entries from this key, the most it takes (feedback_max_per_key); "
                       "nothing was stored", code="feedback_limit", param="id")
    now = now or datetime.now(UTC)
    feedback_id = "fb_" + secrets.token_hex(12)
    con.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                [feedback_id, interaction_id, score, comment, source, now])
    return {"id": feedback_id, "interaction_id": interaction_id, "score": score,
            "comment": comment, "created_at": now.isoformat()}


def feedback_summary(con: Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    where, params = ids_condition("interaction_id", ids)
    rows = con.execute(f"SELECT interaction_id, avg(score), count(*) FROM feedback "
                       f"WHERE {where} GROUP BY 1", params).fetchall()
    return {r[0]: {"score": r[1], "feedback_count": r[2]} for r in rows}


FEEDBACK_SHOWN = 100
"""An item's feedback entries answered at most (the newest; `feedback_count` has them all): an
app key can post feedback on its rows without end, and 12,619 entries made one item's answer
39.7 MB (review r12y MED 5)."""


def feedback_of(con: Connection, interaction_id: str,
                limit: int = FEEDBACK_SHOWN) -> list[dict[str, Any]]:
    """The newest `limit` feedback entries of an interaction, oldest first."""
    rows = con.execute("SELECT id, score, comment, source, created_at FROM feedback "
                       "WHERE interaction_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                       [interaction_id, limit]).fetchall()
    return [{"id": r[0], "score": r[1], "comment": r[2], "source": r[3],
             "created_at": r[4].isoformat()} for r in reversed(rows)]


def min_score_condition(min_score: float, alias: str = "i", bounds: Bounds | None = None
                        ) -> tuple[str, list[Any]]:
    """The interaction `alias` has feedback with a mean score of at least `min_score`."""
    within, params = bounded("interaction_id", bounds)
    return (f"{alias}.id IN (SELECT interaction_id FROM feedback WHERE {within} "
            "GROUP BY interaction_id HAVING avg(score) >= ?)", [*params, min_score])


def score_driver(con: Connection, min_score: float, before: str | None,
                 count: int) -> list[str]:
    """Up to `count` ids with a mean score of at least `min_score`, newest first."""
    where, params = ("interaction_id < ?", [before]) if before is not None else ("TRUE", [])
    rows = con.execute(f"SELECT interaction_id FROM feedback WHERE {where} GROUP BY 1 "
                       "HAVING avg(score) >= ? ORDER BY 1 DESC LIMIT ?",
                       [*params, min_score, count]).fetchall()
    return [r[0] for r in rows]
