"""Review state and revisions of interactions.

An interaction with no row in `reviews` is pending at revision 0 with its original message
list. Every action (approve, reject, edit, needs_work, revise, undo) appends one row to
`review_revisions` and moves `reviews` to the new state and revision; the interaction itself
is never modified. Callers run these functions through `Database.write`, whose single writer
thread makes the revision check and the write atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from storage.batch import insert_rows
from storage.claims import conflict_message, live_claims, release
from storage.db import Connection
from storage.lookup import ids_condition
from storage.messages import Message, is_reviewable
from storage.search_index import index_edit
from storage.trainable import UNFINISHED, explain, untrainable_reason
from storage.transaction import transaction
from tuneloop.errors import Conflict, NotFound

STATES = ("pending", "approved", "rejected", "needs_work")
# the state an action leaves the item in (None: unchanged)
ACTION_STATES: dict[str, str | None] = {
    "approve": "approved", "reject": "rejected", "edit": "approved",
    "needs_work": "needs_work", "revise": None,
}
MESSAGE_ACTIONS = ("edit", "revise")
BULK_ACTIONS = ("approve", "reject", "needs_work")

REVISIONS_SCHEMA = pa.schema([
    ("interaction_id", pa.string()), ("revision", pa.int32()), ("action", pa.string()),
    ("state", pa.string()), ("messages", pa.string()), ("reason", pa.string()),
    ("reviewer", pa.string()), ("role", pa.string()), ("restores", pa.int32()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])
REVIEWS_SCHEMA = pa.schema([
    ("interaction_id", pa.string()), ("state", pa.string()), ("revision", pa.int32()),
    ("messages", pa.string()), ("reviewer", pa.string()),
    ("updated_at", pa.timestamp("us", tz="UTC")),
    ("interaction_created_at", pa.timestamp("us", tz="UTC")), ("model", pa.string()),
    ("logged_tags", pa.list_(pa.string())),
])


@dataclass(frozen=True)
class ReviewAction:
    interaction_id: str
    action: str
    reviewer: str
    reason: str | None = None
    messages: list[Message] | None = None
    expected_revision: int | None = None
    role: str | None = None


@dataclass
class ReviewResult:
    id: str
    status: str  # ok | conflict | not_found | not_reviewable | not_trainable | claimed
    review: str | None = None
    revision: int | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class _Current:
    state: str = "pending"
    revision: int = 0
    messages: str | None = None  # JSON text; None: the original message list
    created_at: datetime | None = None
    model: str | None = None
    logged_tags: list[str] | None = None
    reviewable: bool = True
    endpoint: str | None = None
    status_code: int | None = None
    finish: str | None = None


@dataclass
class _Pending:
    revisions: list[dict[str, Any]] = field(default_factory=list)
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    edits: list[tuple[str, list[Message]]] = field(default_factory=list)


def _load_current(con: Connection, ids: Sequence[str]) -> dict[str, _Current]:
    where, params = ids_condition("id", ids)
    rows = con.execute(
        f"SELECT id, endpoint, created_at, model, tags, status_code, finish FROM interactions "
        f"WHERE {where}", params
    ).fetchall()
    current = {r[0]: _Current(created_at=r[2], model=r[3], logged_tags=r[4],
                              reviewable=is_reviewable(r[1]), endpoint=r[1],
                              status_code=r[5], finish=r[6]) for r in rows}
    where, params = ids_condition("interaction_id", ids)
    for interaction_id, state, revision, messages in con.execute(
        f"SELECT interaction_id, state, revision, messages FROM reviews WHERE {where}", params
    ).fetchall():
        if interaction_id in current:
            item = current[interaction_id]
            item.state, item.revision, item.messages = state, revision, messages
    return current


def _record(pending: _Pending, item: _Current, interaction_id: str, *, action: str,
            state: str, messages: str | None, reason: str | None, reviewer: str,
            role: str | None, restores: int | None, now: datetime) -> None:
    item.revision += 1
    item.state, item.messages = state, messages
    pending.revisions.append({
        "interaction_id": interaction_id, "revision": item.revision, "action": action,
        "state": state, "messages": messages, "reason": reason, "reviewer": reviewer,
        "role": role, "restores": restores, "created_at": now,
    })
    pending.reviews[interaction_id] = {
        "interaction_id": interaction_id, "state": state, "revision": item.revision,
        "messages": messages, "reviewer": reviewer, "updated_at": now,
        "interaction_created_at": item.created_at, "model": item.model,
        "logged_tags": item.logged_tags,
    }


def _flush(con: Connection, pending: _Pending) -> None:
    insert_rows(con, "review_revisions", pending.revisions, REVISIONS_SCHEMA)
    insert_rows(con, "reviews", list(pending.reviews.values()), REVIEWS_SCHEMA,
                "ON CONFLICT (interaction_id) DO UPDATE SET state = excluded.state, "
                "revision = excluded.revision, messages = excluded.messages, "
                "reviewer = excluded.reviewer, updated_at = excluded.updated_at")
    for interaction_id, messages in pending.edits:
        index_edit(con, interaction_id, messages)


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _logged_reasons(con: Connection, current: dict[str, _Current],
                    ids: Sequence[str]) -> dict[str, str | None]:
    """Why each of these items (no edit) has no final answer (None: it has one)."""
    reasons: dict[str, str | None] = {}
    to_read = []
    for interaction_id in ids:
        item = current[interaction_id]
        failed = (item.status_code or 0) >= 400 or item.finish in UNFINISHED
        if failed:  # settled without reading the logged JSON
            reasons[interaction_id] = untrainable_reason(item.endpoint, item.status_code,
                                                         item.finish, None, None)
        else:
            to_read.append(interaction_id)
    where, params = ids_condition("id", sorted(to_read))
    for interaction_id, request, response in con.execute(
            f"SELECT id, request, response FROM interactions WHERE {where}", params).fetchall():
        item = current[interaction_id]
        reasons[interaction_id] = untrainable_reason(
            item.endpoint, item.status_code, item.finish, _parse(request), _parse(response))
    return reasons


def _approvable(con: Connection, actions: Sequence[ReviewAction],
                current: dict[str, _Current]) -> dict[str, str | None]:
    """For actions that may leave an item approved on its logged messages: why not."""
    ids = sorted({a.interaction_id for a in actions
                  if a.interaction_id in current and a.messages is None
                  and current[a.interaction_id].messages is None
                  and current[a.interaction_id].reviewable
                  and (a.action == "approve" or current[a.interaction_id].state == "approved")})
    return _logged_reasons(con, current, ids) if ids else {}


def _untrainable(item: _Current, messages: str | None, logged: dict[str, str | None],
                 interaction_id: str) -> str | None:
    if messages is not None:
        return untrainable_reason(item.endpoint, None, None, None, None,
                                  edited=orjson.loads(messages))
    return logged.get(interaction_id)


def apply_reviews(con: Connection, actions: Sequence[ReviewAction],
                  now: datetime | None = None) -> list[ReviewResult]:
    """Apply review actions in one transaction; one result per action, in order. A stale
    `expected_revision` answers `conflict` for that item and changes nothing of it; an item
    another reviewer holds a live claim on answers `claimed`; an action that would leave an
    item approved without a final answer answers `not_trainable`. The acting reviewer's claim
    on each item done is released."""
    now = now or datetime.now(UTC)
    pending = _Pending()

    def run() -> list[ReviewResult]:
        ids = sorted({a.interaction_id for a in actions})
        current = _load_current(con, ids)
        claims = live_claims(con, ids, now)
        logged = _approvable(con, actions, current)
        results = []
        done: dict[str, list[str]] = {}
        for act in actions:
            item = current.get(act.interaction_id)
            if item is None:
                results.append(ReviewResult(act.interaction_id, "not_found",
                                            message="no interaction with this id"))
                continue
            if not item.reviewable:
                results.append(ReviewResult(act.interaction_id, "not_reviewable",
                                            message="embeddings are not reviewable"))
                continue
            if act.expected_revision is not None and act.expected_revision != item.revision:
                results.append(ReviewResult(
                    act.interaction_id, "conflict", item.state, item.revision,
                    f"expected revision {act.expected_revision}, the item is at revision "
                    f"{item.revision} (someone reviewed it meanwhile)"))
                continue
            held = claims.get(act.interaction_id)
            if held is not None and held.reviewer != act.reviewer:
                results.append(ReviewResult(act.interaction_id, "claimed", item.state,
                                            item.revision, conflict_message(held)))
                continue
            messages = item.messages
            if act.action in MESSAGE_ACTIONS and act.messages is not None:
                messages = orjson.dumps(act.messages).decode()
            state = ACTION_STATES[act.action] or item.state
            reason = _untrainable(item, messages, logged, act.interaction_id) \
                if state == "approved" else None
            if reason is not None:
                results.append(ReviewResult(act.interaction_id, "not_trainable", item.state,
                                            item.revision, explain(reason)))
                continue
            if act.action in MESSAGE_ACTIONS and act.messages is not None:
                pending.edits.append((act.interaction_id, act.messages))
            done.setdefault(act.reviewer, []).append(act.interaction_id)
            _record(pending, item, act.interaction_id, action=act.action, state=state,
                    messages=messages, reason=act.reason, reviewer=act.reviewer,
                    role=act.role, restores=None, now=now)
            results.append(ReviewResult(act.interaction_id, "ok", item.state, item.revision))
        _flush(con, pending)
        for reviewer, done_ids in done.items():
            release(con, done_ids, reviewer)
        return results

    with transaction(con):
        return run()


def undo(con: Connection, interaction_id: str, reviewer: str, *, role: str | None = None,
         expected_revision: int | None = None, now: datetime | None = None) -> ReviewResult:
    """Return to the content (state and messages) before the latest action not yet undone."""
    now = now or datetime.now(UTC)

    def run() -> ReviewResult:
        item = _load_current(con, [interaction_id]).get(interaction_id)
        if item is None:
            raise NotFound(f"no interaction with id {interaction_id!r}")
        if expected_revision is not None and expected_revision != item.revision:
            raise Conflict(f"expected revision {expected_revision}, the item is at revision "
                           f"{item.revision}", code="stale_revision")
        held = live_claims(con, [interaction_id], now).get(interaction_id)
        if held is not None and held.reviewer != reviewer:
            raise Conflict(conflict_message(held), code="claimed")
        stack: list[tuple[int, str, str | None]] = []
        for revision, action, state, messages in con.execute(
            "SELECT revision, action, state, messages FROM review_revisions "
            "WHERE interaction_id = ? ORDER BY revision", [interaction_id]).fetchall():
            if action == "undo":
                if stack:
                    stack.pop()
            else:
                stack.append((revision, state, messages))
        if not stack:
            raise Conflict("there is nothing to undo on this item", code="nothing_to_undo")
        stack.pop()
        restores, state, messages = stack[-1] if stack else (0, "pending", None)
        pending = _Pending()
        _record(pending, item, interaction_id, action="undo", state=state, messages=messages,
                reason=None, reviewer=reviewer, role=role, restores=restores, now=now)
        _flush(con, pending)
        return ReviewResult(interaction_id, "ok", item.state, item.revision)

    with transaction(con):
        return run()


def revisions_of(con: Connection, interaction_id: str) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT revision, action, state, messages, reason, reviewer, role, restores, created_at "
        "FROM review_revisions WHERE interaction_id = ? ORDER BY revision",
        [interaction_id]).fetchall()
    return [
        {"revision": r[0], "action": r[1], "state": r[2],
         "messages": None if r[3] is None else orjson.loads(r[3]), "reason": r[4],
         "reviewer": r[5], "role": r[6], "restores": r[7], "created_at": r[8].isoformat()}
        for r in rows
    ]


def review_states(con: Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """State, revision, current edited messages (None: original), last reviewer and time."""
    where, params = ids_condition("interaction_id", ids)
    rows = con.execute(
        "SELECT interaction_id, state, revision, messages, reviewer, updated_at FROM reviews "
        f"WHERE {where}", params).fetchall()
    return {
        r[0]: {"review": r[1], "revision": r[2],
               "messages": None if r[3] is None else orjson.loads(r[3]),
               "reviewed_by": r[4], "reviewed_at": r[5].isoformat()}
        for r in rows
    }
