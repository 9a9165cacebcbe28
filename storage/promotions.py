"""Promotions and rollbacks of an alias's route, on top of `routes` and `route_history`.

A promotion writes the alias's spec and records action `promote` with a detail
`{"model", "canary"}`. Consecutive promotions of one model (a canary share, then full) are one
*episode*. A rollback undoes the latest episode not yet undone: it restores the spec in
effect before the episode began and records action `rollback` with
`{"undoes": <seq of the episode's first promotion>, "model"}`. Rollbacks stack like undo: a
second one undoes the episode before. Manual changes (PUT /admin/routes) neither open nor
close an episode, but a rollback respects them: when the route changed since the episode's
latest promotion, a canary's rollback takes the canary out of the current route instead of
restoring the old spec, and a full promotion's is refused unless forced
(storage/rollback_edits.py). Both writes take an optional `expect_seq` (the alias's latest
history seq the caller read) and refuse with Conflict when the history moved since.

The spec itself is built by the caller (the proxy validates it); storage only runs the
read-build-write in one transaction on the writer thread, so two promotions can't interleave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from storage.backend import upsert_sql
from storage.db import Connection
from storage.notify import ROUTES, notify
from storage.rollback_edits import (
    check_expected_seq,
    describe_episode,
    refuse_after_recent_rollback,
    refuse_restore,
    without_canary,
    wrong_model,
)
from storage.transaction import transaction
from tuneloop.errors import Conflict, NotFound

Spec = dict[str, Any]


@dataclass(frozen=True)
class Episode:
    first_seq: int
    model: str
    started_at: datetime
    promoted_at: datetime  # the latest promotion of the episode
    canary: float | None  # the latest promotion's share
    before: Spec | None  # the spec in effect before the episode began
    promoted_seq: int  # the latest promotion's seq
    written: Spec | None  # the spec the latest promotion wrote
    promoted_by: str | None = None  # who made the latest promotion (`changed_by`)

    def changed_since(self, spec: Spec | None) -> bool:
        """The route is no longer what the latest promotion wrote (a person's edit, ...)."""
        return spec != self.written

    def to_json(self) -> dict[str, Any]:
        return {"first_seq": self.first_seq, "model": self.model,
                "started_at": self.started_at.isoformat(),
                "promoted_at": self.promoted_at.isoformat(), "canary": self.canary,
                "before": self.before, "promoted_seq": self.promoted_seq,
                "promoted_by": self.promoted_by}


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def open_episodes(con: Connection, alias: str) -> list[Episode]:
    """The alias's promotion episodes not yet rolled back, oldest first."""
    rows = con.execute(
        "SELECT seq, spec, action, changed_at, detail, changed_by FROM route_history "
        "WHERE alias = ? ORDER BY seq", [alias]).fetchall()
    stack: list[Episode] = []
    previous: Spec | None = None
    for seq, spec_text, action, changed_at, detail_text, by in rows:
        spec, detail = _loads(spec_text), _loads(detail_text) or {}
        if action == "promote":
            model, canary = str(detail.get("model")), detail.get("canary")
            if stack and stack[-1].model == model:
                stack[-1] = replace(stack[-1], promoted_at=changed_at, canary=canary,
                                    promoted_seq=seq, written=spec, promoted_by=by)
            else:
                stack.append(Episode(seq, model, changed_at, changed_at, canary, previous,
                                     seq, spec, by))
        elif action == "rollback":
            stack = [e for e in stack if e.first_seq != detail.get("undoes")]
        previous = spec
    return stack


def _current(con: Connection, alias: str) -> Spec | None:
    rows = con.execute("SELECT spec FROM routes WHERE alias = ?", [alias]).fetchall()
    return orjson.loads(rows[0][0]) if rows else None


def _write(con: Connection, alias: str, spec: Spec, action: str, detail: dict[str, Any],
           by: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    text = orjson.dumps(spec).decode()
    con.execute(upsert_sql("routes", ("alias", "spec", "updated_at", "updated_by"), "alias"),
                [alias, text, now, by])
    seq = con.execute(
        "INSERT INTO route_history (alias, spec, action, changed_at, changed_by, detail) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
        [alias, text, action, now, by, orjson.dumps(detail).decode()]).fetchall()[0][0]
    notify(con, ROUTES)  # every replica reloads its routes when this commits
    return {"seq": seq, "changed_at": now.isoformat()}


def promote_route(con: Connection, alias: str, build: Callable[[Spec | None], Spec],
                  detail: dict[str, Any], by: str | None,
                  expect_seq: int | None = None) -> dict[str, Any]:
    """Write `build(current spec or None)` as the alias's route and record the promotion.
    `detail` holds at least the promoted `model` and its `canary` share."""

    def work() -> dict[str, Any]:
        check_expected_seq(con, alias, expect_seq)
        previous = _current(con, alias)
        spec = build(previous)
        written = _write(con, alias, spec, "promote", detail, by)
        return {"alias": alias, "action": "promote", **detail, **written, "spec": spec,
                "previous": previous}

    with transaction(con):
        return work()


def rollback_route(con: Connection, alias: str, by: str | None,
                   verdict: dict[str, Any] | None = None, *, force: bool = False,
                   expect_seq: int | None = None, model: str | None = None) -> dict[str, Any]:
    """Undo the latest promotion episode not yet undone: restore the spec in effect before it,
    or, when the route changed since its latest promotion, take its canary out of the current
    route (refused when there is no canary share to take out, unless `force` restores the old
    spec anyway); `verdict` (the canary test's statistics, when a test decided) joins the
    recorded detail. `model`: the model the caller means to roll back; Conflict when the
    latest episode is another's (storage/rollback_edits.py `wrong_model`). Without `model` or
    `force`, refused right after another rollback (`refuse_after_recent_rollback`). The result's
    `undone` is the episode undone (its model, when and by whom it was promoted)."""

    def work() -> dict[str, Any]:
        check_expected_seq(con, alias, expect_seq)
        episodes = open_episodes(con, alias)
        current = _current(con, alias)
        if not episodes:
            if current is None:
                raise NotFound(f"no route for alias {alias!r}")
            raise Conflict(f"{alias!r} has no promotion to roll back")
        episode = episodes[-1]
        if model is not None and model != episode.model:
            raise wrong_model(con, alias, model, describe_episode(episode))
        if model is None and not force:
            refuse_after_recent_rollback(con, alias, episode.model, describe_episode(episode))
        detail: dict[str, Any] = {"undoes": episode.first_seq, "model": episode.model}
        spec = episode.before
        if episode.changed_since(current) and current != episode.before:
            is_canary = episode.canary is not None and episode.canary < 100
            rebuilt = without_canary(current, episode.model, episode.before) \
                if is_canary else None
            if rebuilt is not None:
                spec, detail["rebuilt"] = rebuilt, True
            elif not force:
                raise refuse_restore(con, alias, episode.model, episode.promoted_seq,
                                     is_canary, episode.before, current)
            else:
                detail["forced"] = True
        if spec is None:
            raise Conflict(f"{alias!r} had no route before {episode.model} was promoted: there "
                           "is no previous target to roll back to (replace the route with "
                           "PUT /admin/routes instead)")
        if verdict is not None:
            detail["verdict"] = verdict
        written = _write(con, alias, spec, "rollback", detail, by)
        return {"alias": alias, "action": "rollback", **detail, **written,
                "spec": spec, "previous": current, "undone": episode.to_json()}

    with transaction(con):
        return work()


def latest_episode(con: Connection, alias: str) -> Episode | None:
    episodes = open_episodes(con, alias)
    return episodes[-1] if episodes else None


def open_canary(con: Connection, alias: str) -> Episode | None:
    """The alias's open canary: the latest promotion episode not rolled back, when it gave its
    model a share (< 100%) and that model still shares the route with another target. It
    stays open until promoted fully, rolled back or replaced by another promotion; a
    rollback of a later promotion opens it again. Weights never decide it (a canary may take
    up to 90%)."""
    return canary_of(latest_episode(con, alias), _current(con, alias))


def canary_of(episode: Episode | None, spec: Spec | None) -> Episode | None:
    """`open_canary` from the alias's latest open episode and its current spec."""
    if episode is None or spec is None or episode.canary is None or episode.canary >= 100:
        return None
    models = {str(t.get("model")) for t in spec.get("targets") or []}
    return episode if episode.model in models and len(models) > 1 else None


def last_change(con: Connection, alias: str) -> datetime | None:
    rows = con.execute("SELECT max(changed_at) FROM route_history WHERE alias = ?",
                       [alias]).fetchall()
    value: datetime | None = rows[0][0]
    return value
