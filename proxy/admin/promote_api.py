"""Promotion, rollback and canary health of one alias:

- `POST /admin/routes/{alias}/promote` (admin): a canary share or the full route for a model;
- `POST /admin/routes/{alias}/rollback` (admin): the spec before the latest promotion (the
  canary taken out of the current route when it changed since; storage/rollback_edits.py);
  an optional body `{"verdict": {...}, "force": bool, "expect_seq": int, "model": str}`:
  `verdict` (like the promotion's) records why, `force` restores the old spec over changes
  made since, `model` refuses (409 `rollback_other_model`) unless the latest promotion not yet
  rolled back is that model's (a late or repeated rollback would undo an older one); without
  `model` or `force`, a rollback right after another one (10 minutes) is refused (409
  `just_rolled_back`, storage/rollback_edits.py);
- `GET /admin/routes/{alias}/health?since=&until=&history_baseline=&by_key=`: per target,
  production traffic since the latest promotion (or `since`); `history_baseline=true` judges
  it as the canary's baseline from before the canary (storage/route_health.py), echoed in the
  answer; `by_key=true` adds each target's counts per client key (the canary's strata),
  their judged requests per part of the window too (`judged_parts`);
- `GET /admin/routes/{alias}/canary`: the route's open canary (storage/promotions.py
  `open_canary`) and its stable model, the one the alias serves for sure.

Both reads return the alias's latest history `seq` and whether the route changed since the
latest promotion (`changed_since_promotion`); both writes take `expect_seq` (the promotion in
its body beside the request's fields) and refuse with 409 `route_changed` when the history
moved past it.

Both writes record the route history and reload the in-memory router at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import (
    ADMIN_BODY_LIMIT,
    authorize,
    bool_param,
    int_param,
    json_object,
    json_response,
    parse_admin_json,
    time_param,
)
from proxy.admin.routes_api import checked_spec, reload_routes
from proxy.auth import Role
from proxy.background_opinion import answer_bound_s, ingest_grace_s
from proxy.body import read_request_body
from proxy.context import context_of
from proxy.promotion import (
    candidate_alone,
    parse_promote_request,
    promoted_spec,
    stable_target,
)
from proxy.routing import RouteSpec
from proxy.upstream_keys import keyless_elsewhere, refuse_unset_keys
from storage.db import Connection
from storage.promotions import (
    Episode,
    canary_of,
    last_change,
    latest_episode,
    open_canary,
    promote_route,
    rollback_route,
)
from storage.rollback_edits import latest_seq
from storage.route_health import MAX_REQUESTS_PER_USER, MAX_VOTES_PER_VOTER, route_health
from storage.routes import load_routes
from tuneloop.config import Settings
from tuneloop.errors import BadRequest

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _alias(request: Request) -> str:
    alias: str = request.path_params["alias"]
    if not 0 < len(alias) <= 256:
        raise BadRequest("an alias is a string of 1-256 characters", param="alias")
    return alias


def _actor(request: Request) -> str:
    return request.headers.get("x-tuneloop-actor", "admin")[:128]


async def promote(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    alias = _alias(request)
    body = await json_object(request)
    expect_seq = _expect_seq(body.pop("expect_seq", None))
    promotion = parse_promote_request(body)
    refuse_unset_keys(ctx.settings, [promotion.api_key_env], "api_key_env")

    def build(con: Connection, current: dict[str, Any] | None) -> dict[str, Any]:
        spec = None if current is None else RouteSpec.model_validate(current)
        if spec is None and not promotion.full:  # refused with a hint: first, is it valid?
            checked_spec(con, alias, candidate_alone(promotion))
        canary = open_canary(con, alias)
        made, _ = checked_spec(con, alias, promoted_spec(
            alias, spec, promotion, None if canary is None else canary.model))
        return made.model_dump(exclude_none=True)

    detail: dict[str, Any] = {"model": promotion.model, "canary": min(promotion.canary, 100.0)}
    if promotion.transforms() is not None:
        detail["transforms"] = promotion.transforms()
    if promotion.drop_transforms:
        detail["drop_transforms"] = promotion.drop_transforms
    if promotion.no_transforms:
        detail["no_transforms"] = True
    if promotion.verdict is not None:
        detail["verdict"] = promotion.verdict
    result = await ctx.db.write(
        lambda con: promote_route(con, alias, lambda cur: build(con, cur), detail,
                                  _actor(request), expect_seq))
    await reload_routes(ctx)
    result["warnings"] = keyless_elsewhere(ctx.settings, alias,
                                           RouteSpec.model_validate(result["spec"]))
    return json_response(result)


def _expect_seq(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < 0):
        raise BadRequest("expect_seq must be a route history seq (an integer >= 0)",
                         param="expect_seq")
    return value


async def _optional_object(request: Request) -> dict[str, Any]:
    """The JSON object of a body that may be empty (then {})."""
    settings = context_of(request).settings
    raw = await read_request_body(request, ADMIN_BODY_LIMIT, settings)
    if not raw.strip():
        return {}
    body = parse_admin_json(raw, settings.max_json_depth)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return body


async def rollback(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    alias = _alias(request)
    body = await _optional_object(request)
    unknown = body.keys() - {"verdict", "force", "expect_seq", "model"}
    if unknown:
        raise BadRequest(f"unknown fields: {sorted(unknown)}")
    verdict = body.get("verdict")
    if verdict is not None and not isinstance(verdict, dict):
        raise BadRequest("verdict must be an object", param="verdict")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("force must be true or false", param="force")
    expect_seq = _expect_seq(body.get("expect_seq"))
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 256):
        raise BadRequest("model must be the name of the model to roll back", param="model")
    result = await ctx.db.write(
        lambda con: rollback_route(con, alias, _actor(request), verdict=verdict, force=force,
                                   expect_seq=expect_seq, model=model))
    await reload_routes(ctx)
    return json_response(result)


def _guard(seq: int | None, episode: Episode | None, spec: dict[str, Any] | None
           ) -> dict[str, Any]:
    """What a caller deciding on this read passes back as `expect_seq` (read BEFORE the
    route: a write in between makes it stale, never the route), and whether the route changed
    since the latest promotion (a person's edit during a canary)."""
    return {"seq": seq,
            "changed_since_promotion": episode is not None and episode.changed_since(spec)}


def opinion_bound_s(settings: Settings, spec: dict[str, Any] | None) -> float:
    """The longest a background opinion asked on this route could take to be in the store
    (`answer_bound_s` plus `ingest_grace_s`, proxy/background_opinion.py), with the largest
    timeouts the settings or the route give: after it an `asked` row written without `late_due`
    is lost, not pending."""
    parts = [spec or {}, *((spec or {}).get("targets") or []),
             *((spec or {}).get("fallbacks") or [])]
    connect = max([settings.connect_timeout_s,
                   *(float(p["connect_timeout_s"]) for p in parts if p.get("connect_timeout_s"))])
    read = max([settings.read_timeout_s,
                *(float(p["read_timeout_s"]) for p in parts if p.get("read_timeout_s"))])
    return answer_bound_s(connect, read) + ingest_grace_s(settings)


def _roles(spec: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """What each model is in the current route: a weighted target (with its share, that of
    all its deployments) or a fallback."""
    if spec is None:
        return {}
    roles: dict[str, dict[str, Any]] = {}
    total = sum(float(t.get("weight", 100.0)) for t in spec["targets"]) or 1.0
    for model in dict.fromkeys(t["model"] for t in spec["targets"]):
        weight = sum(float(t.get("weight", 100.0)) for t in spec["targets"]
                     if t["model"] == model)
        roles[model] = {"role": "target", "share": round(100 * weight / total, 3)}
    for target in spec.get("fallbacks", []):
        roles.setdefault(target["model"], {"role": "fallback", "share": 0.0})
    return roles


async def health(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    alias = _alias(request)
    since = time_param(request.query_params, "since")
    until = time_param(request.query_params, "until")
    cap = int_param(request.query_params, "max_votes_per_voter", default=MAX_VOTES_PER_VOTER,
                    low=1, high=1_000_000)
    per_user = int_param(request.query_params, "max_requests_per_user",
                         default=MAX_REQUESTS_PER_USER, low=1, high=1_000_000)
    assert cap is not None and per_user is not None
    history = bool_param(request.query_params, "history_baseline") or False
    by_key = bool_param(request.query_params, "by_key") or False
    skip_since = time_param(request.query_params, "skip_since")
    skip_until = time_param(request.query_params, "skip_until")
    if (skip_since is None) != (skip_until is None) or \
            (skip_since is not None and skip_until is not None and skip_until < skip_since):
        raise BadRequest("skip_since and skip_until go together, skip_since first",
                         param="skip_since")
    skip = None if skip_since is None or skip_until is None else (skip_since, skip_until)

    def read(con: Any) -> dict[str, Any]:
        seq = latest_seq(con, alias)
        episode = latest_episode(con, alias)
        start = since or (episode.promoted_at if episode else None) or last_change(con, alias) \
            or datetime(1970, 1, 1, tzinfo=UTC)
        spec = load_routes(con).get(alias)
        opened = canary_of(episode, spec)
        targets = route_health(con, alias, start, until or FAR_FUTURE, cap, per_user,
                               None if opened is None else opened.model, history,
                               asked_bound_s=opinion_bound_s(ctx.settings, spec),
                               by_key=by_key, skip=skip)
        roles = _roles(spec)
        for row in targets:
            row.update(roles.get(row["target"], {"role": "not_in_route", "share": 0.0}))
        if episode is not None:
            for row in targets:
                row["candidate"] = row["target"] == episode.model
        return {"alias": alias, "since": start.isoformat(), "until": until and until.isoformat(),
                "promotion": None if episode is None else episode.to_json(),
                "route": spec, "targets": targets, "history_baseline": history,
                **_guard(seq, episode, spec)}

    return json_response(await ctx.db.read(read))


async def canary(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    alias = _alias(request)

    def read(con: Connection) -> dict[str, Any]:
        seq = latest_seq(con, alias)
        spec = load_routes(con).get(alias)
        latest = latest_episode(con, alias)
        episode = canary_of(latest, spec)
        stable = None
        if spec is not None:
            target = stable_target(RouteSpec.model_validate(spec), None,
                                   None if episode is None else episode.model)
            stable = None if target is None else target.model
        changed = last_change(con, alias)
        return {"alias": alias, "route": spec, "stable": stable,
                "canary": None if episode is None else episode.to_json(),
                "promotion": None if latest is None else latest.to_json(),
                "changed_at": None if changed is None else changed.isoformat(),
                **_guard(seq, latest, spec)}

    return json_response(await ctx.db.read(read))


ROUTES = [
    Route("/admin/routes/{alias:path}/promote", promote, methods=["POST"]),
    Route("/admin/routes/{alias:path}/rollback", rollback, methods=["POST"]),
    Route("/admin/routes/{alias:path}/health", health, methods=["GET"]),
    Route("/admin/routes/{alias:path}/canary", canary, methods=["GET"]),
]
