"""A rollback onto a route changed since its promotion (a person's PUT /admin/routes while a
canary was open, say), and the optimistic guard of promotions and rollbacks.

Restoring the spec from before the episode would silently undo such a change, so:

- a canary episode whose model is still a target is rebuilt on the CURRENT route: the canary
  model's targets are taken out and their weight is given back to the others in proportion
  (each keeps its other fields; no weight above MAX_ROUTE_WEIGHT, where the route would be
  refused). Route-level `prompt_suffix`/`stop` stay as they are now: the
  promotion moved them onto each target (proxy/promotion.py `route_level_moved`), so the
  remaining targets still carry them, and putting them back on the route would reach targets
  a person added without them. A fallback entry of the model that the promotion took out
  (it became the canary) comes back, as an exact restore would have it;
- anything else (a full promotion, a canary model no longer in the route, or nothing left to
  serve without it) is refused with Conflict saying what changed, unless the caller forces the
  exact restore.

`expect_seq`: the alias's latest route_history seq the caller read (GET .../canary and
.../health return it as `seq`); a write refuses with Conflict `route_changed` when the alias's
history moved since, so a decision taken on a route a person changed meanwhile is taken again.

A rollback right after another one (the alias's latest change is a rollback of the last
RECENT_ROLLBACK: the cycle's, a colleague's) is refused (Conflict `just_rolled_back`) unless it
names the `model` it means or is forced: a late or repeated rollback would silently undo an
older promotion (last month's full one) nobody meant to.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from shlex import quote
from typing import Any

import orjson

from storage.db import Connection
from tuneloop.config import MAX_ROUTE_WEIGHT
from tuneloop.errors import Conflict

Spec = dict[str, Any]
CHANGES_LISTED = 5
RECENT_ROLLBACK = timedelta(minutes=10)


def latest_seq(con: Connection, alias: str) -> int | None:
    rows = con.execute("SELECT max(seq) FROM route_history WHERE alias = ?", [alias]).fetchall()
    value = rows[0][0]
    return None if value is None else int(value)


def check_expected_seq(con: Connection, alias: str, expect_seq: int | None) -> None:
    if expect_seq is None:
        return
    seq = latest_seq(con, alias)
    if seq != expect_seq:
        raise Conflict(f"route {alias!r} changed since it was read (its history is at #{seq}, "
                       f"not #{expect_seq}): read it again and decide again",
                       code="route_changed")


def _weight(target: Spec) -> float:
    return float(target.get("weight", 100.0))


def without_canary(current: Spec | None, model: str, before: Spec | None) -> Spec | None:
    """`current` with `model`'s targets taken out and their weight given back to the others
    in proportion; None when `model` is no target or no weighted target would be left."""
    if current is None:
        return None
    targets: list[Spec] = list(current.get("targets") or [])
    kept = [t for t in targets if t.get("model") != model]
    left = sum(_weight(t) for t in kept)
    if len(kept) == len(targets) or left <= 0:
        return None
    scale = sum(_weight(t) for t in targets) / left
    # weights are ratios: capping the scale keeps the split and a weight the proxy takes
    scale = min(scale, MAX_ROUTE_WEIGHT / max(_weight(t) for t in kept))
    fallbacks: list[Spec] = list(current.get("fallbacks") or [])
    if not any(f.get("model") == model for f in fallbacks):
        fallbacks += [f for f in (before or {}).get("fallbacks") or []
                      if f.get("model") == model][:1]
    rebuilt = {**current, "targets": [{**t, "weight": round(_weight(t) * scale, 6)}
                                      for t in kept]}
    if fallbacks:
        rebuilt["fallbacks"] = fallbacks
    return rebuilt


def describe_targets(spec: Spec | None) -> str:
    if spec is None:
        return "no route (deleted)"
    targets = spec.get("targets") or []
    total = sum(_weight(t) for t in targets) or 1.0
    return ", ".join(f"{t.get('model')} {100 * _weight(t) / total:g}%" for t in targets)


def changes_since(con: Connection, alias: str, seq: int) -> list[str]:
    """The alias's history entries after `seq`, newest last (at most CHANGES_LISTED)."""
    rows = con.execute(
        "SELECT seq, action, changed_by, changed_at FROM route_history WHERE alias = ? "
        "AND seq > ? ORDER BY seq DESC LIMIT ?", [alias, seq, CHANGES_LISTED]).fetchall()
    return [f"#{s} {action} by {by or 'unknown'} at {at.isoformat(timespec='seconds')}"
            for s, action, by, at in reversed(rows)]


def refuse_restore(con: Connection, alias: str, model: str, promoted_seq: int, canary: bool,
                   before: Spec | None, current: Spec | None) -> Conflict:
    """Why a rollback will not restore the spec from before `model`'s promotion by itself."""
    changes = "; ".join(changes_since(con, alias, promoted_seq)) or "by another route write"
    why = (f"the canary of {model} no longer shares the route" if canary
           else f"{model} was promoted fully (no canary share to take out)")
    return Conflict(
        f"route {alias!r} was changed since {model} was promoted (#{promoted_seq}): {changes}. "
        f"It now sends {describe_targets(current)}; {why}, so rolling back means restoring "
        f"the route from before the promotion ({describe_targets(before)}) and undoing those "
        f"changes. Set the route you want (`tuneloop routes set`, PUT /admin/routes), or roll "
        f"back anyway: `tuneloop rollback --alias {quote(alias)} --force` (API: "
        f'{{"force": true}})', code="route_edited")


def describe_episode(episode: Any) -> str:
    """`ft-v1 (promoted fully at 2026-11-01T10:00:00+00:00 by cli, #12)`: a promotion episode
    (storage/promotions.py `Episode`) for people."""
    share = "fully" if (episode.canary or 0) >= 100 else f"as a {episode.canary:g}% canary"
    return (f"{episode.model} (promoted {share} at "
            f"{episode.promoted_at.isoformat(timespec='seconds')} by "
            f"{episode.promoted_by or 'unknown'}, #{episode.promoted_seq})")


def wrong_model(con: Connection, alias: str, model: str, undone: str) -> Conflict:
    """A rollback meant for `model` would undo another promotion (`undone`): `model` was
    rolled back already (by the cycle, by someone else) or never promoted."""
    rows = con.execute(
        "SELECT seq, changed_by, changed_at, detail FROM route_history WHERE alias = ? AND "
        "action = 'rollback' ORDER BY seq DESC LIMIT 100", [alias]).fetchall()
    done = next((r for r in rows if (orjson.loads(r[3] or "{}") or {}).get("model") == model),
                None)
    happened = (f"{model} was rolled back already (#{done[0]} by {done[1] or 'unknown'} "
                f"at {done[2].isoformat(timespec='seconds')})" if done
                else f"{model} has no open promotion on it")
    return Conflict(
        f"route {alias!r}: {happened}; rolling back now would undo {undone} instead. See "
        f"`tuneloop routes history --alias {quote(alias)}`; to undo that one, roll back with "
        'its model (`--model`, API: "model")', code="rollback_other_model")


def refuse_after_recent_rollback(con: Connection, alias: str, model: str, undone: str) -> None:
    """Conflict `just_rolled_back` when the alias's latest change is a rollback of the last
    RECENT_ROLLBACK: another rollback (of `model`'s promotion, `undone` for people) without
    naming the model would undo a promotion the caller never saw."""
    rows = con.execute(
        "SELECT seq, action, changed_by, changed_at, detail FROM route_history WHERE alias = ? "
        "ORDER BY seq DESC LIMIT 1", [alias]).fetchall()
    if not rows or rows[0][1] != "rollback":
        return
    seq, _, by, at, detail_text = rows[0]
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if datetime.now(UTC) - at > RECENT_ROLLBACK:
        return
    detail = orjson.loads(detail_text or "{}") or {}
    named = orjson.dumps({"model": model}).decode()
    raise Conflict(
        f"route {alias!r} was just rolled back: #{seq} rollback by {by or 'unknown'} at "
        f"{at.isoformat(timespec='seconds')} undid {detail.get('model')} "
        f"(#{detail.get('undoes')}). Another rollback now would undo {undone}. If you meant the "
        f"rollback above, it is done; to undo {model} as well: `tuneloop rollback --alias "
        f"{quote(alias)} --model {quote(model)}` (API: {named}, or {{\"force\": true}})",
        code="just_rolled_back")
