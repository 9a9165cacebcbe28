"""The route a promotion writes, as a pure function of the current route and the request.

- canary (0 < share < 100): the current ("stable") target keeps 100 - share of the traffic,
  the candidate gets the share; fallbacks are kept.
- full (share 100): the candidate only, with the stable target as the first fallback (unless
  `previous_as_fallback` is off), then the kept fallbacks.

The stable target is the heaviest current target that is neither the candidate nor the
route's open canary (storage/promotions.py `open_canary`; proxy/routing.py `stable_target`): a
new canary replaces an open one beside the stable target, whatever their weights. A model is
one arm whatever its deployments (the same model at other base_urls or providers): all the
stable model's deployments share 100 - share in their weights' ratio (on a full promotion all
become fallbacks, heaviest first), and the candidate's deployments in the route's targets
share its share. A candidate already in the route (a target, else a fallback: promoted again
after a newer model took its place) keeps its provider, base_url, key variable and
transforms unless the request names new ones (then only the deployment named is routed), so
promoting a canary to full needs only the model name.

The request's `strip_template`, `system_prompt`, `prompt_suffix` and `stop` become the
candidate's own transforms (proxy.transforms): the stable target keeps getting the app's
request as sent, so a canary compares the two models on what each will really see. They are
merged into the transforms the candidate already has in the route, by type: a named one
replaces that type only, the others are kept (a full promotion after a canary with
`stop` named keeps the canary's template and separator). Removing one is explicit:
`drop_transforms` (types) or `no_transforms` (start from none: only the named ones). A route
with route-level `prompt_suffix`/`stop` (stored before per-target transforms) has them moved
onto each of its targets and fallbacks first, so those keep getting what they got.
"""

from __future__ import annotations

import json
from shlex import quote
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from proxy.routing import RouteSpec, Target, model_name_problem, stable_target
from tuneloop.config import MAX_CANARY_SHARE, MIN_CANARY_SHARE, canary_share_problem
from tuneloop.errors import BadRequest, Conflict

FULL = 100.0
TransformType = Literal["strip_template", "replace_system_prompt", "legacy_separator", "stop"]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    canary: float = FULL
    """Percent of the alias's traffic for the candidate, from MIN_CANARY_SHARE to
    MAX_CANARY_SHARE (tuneloop/config.py); 100 promotes fully."""
    provider: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    prompt_suffix: str | None = Field(None, min_length=1)
    """Legacy-format models: the separator appended to the candidate's prompts."""
    stop: str | list[str] | None = None
    """The stop sequence always sent to the candidate (merged with a request's own)."""
    strip_template: str | None = Field(None, min_length=1, max_length=80)
    """A frozen template (`name-vN`) taken out of the candidate's requests."""
    system_prompt: str | None = Field(None, min_length=1)
    """A short system prompt replacing the app's (or the stripped template's) for the
    candidate."""
    drop_transforms: list[TransformType] = Field(default_factory=list, max_length=4)
    """Transform types the candidate had in the route that it no longer gets."""
    no_transforms: bool = False
    """Drop every transform the candidate had in the route: it gets only the named ones."""
    keep_fallbacks: bool = True
    previous_as_fallback: bool = True
    verdict: dict[str, Any] | None = None
    """The canary test's statistics behind the promotion (kept in the route history)."""

    @field_validator("model")
    @classmethod
    def _a_model_name(cls, value: str) -> str:
        problem = model_name_problem(value)
        if problem is not None:
            raise PydanticCustomError("model_name", problem)
        return value

    @field_validator("canary", mode="before")
    @classmethod
    def _a_share_that_is_judged(cls, value: Any) -> float:
        # a number only: neither "10" nor true (which lax parsing takes for 1%)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PydanticCustomError(
                "canary_share", f"the canary share must be a number between "
                f"{MIN_CANARY_SHARE:g} and {MAX_CANARY_SHARE:g} (percent), or 100 to promote "
                f"fully; got {json.dumps(value, default=str)[:80]}")
        problem = canary_share_problem(float(value))
        if problem is not None:
            raise PydanticCustomError("canary_share", problem)
        return float(value)

    @property
    def full(self) -> bool:
        return self.canary >= FULL

    @model_validator(mode="after")
    def _no_named_and_dropped(self) -> PromoteRequest:
        named = {t["type"] for t in self.transforms() or ()}
        both = sorted(named & set(self.drop_transforms))
        if both:
            raise ValueError(f"drop_transforms names {both}, which this promotion also sets")
        return self

    def transforms(self) -> list[dict[str, Any]] | None:
        """The candidate's transforms the request names (None: it names none)."""
        made: list[dict[str, Any]] = []
        if self.strip_template is not None:
            made.append({"type": "strip_template", "template": self.strip_template})
        if self.system_prompt is not None:
            made.append({"type": "replace_system_prompt", "system_prompt": self.system_prompt})
        if self.prompt_suffix is not None:
            made.append({"type": "legacy_separator", "separator": self.prompt_suffix})
        if self.stop is not None:
            made.append({"type": "stop", "stop": self.stop})
        return made or None


def parse_promote_request(body: dict[str, Any]) -> PromoteRequest:
    try:
        return PromoteRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}", param=where) from exc


def _same(a: Target, b: Target) -> bool:
    return (a.model, a.provider, a.base_url) == (b.model, b.provider, b.base_url)


def merged_transforms(had: list[dict[str, Any]], request: PromoteRequest
                      ) -> list[dict[str, Any]]:
    """The candidate's transforms after the promotion: those it had, less the dropped types
    and the types the request names, plus the named ones (they apply in a fixed order, so the
    list's order does not matter)."""
    named = request.transforms() or []
    replaced = {t["type"] for t in named} | set(request.drop_transforms)
    return [t for t in had if t.get("type") not in replaced] + named


def _candidate(request: PromoteRequest, known: Target | None, weight: float) -> Target:
    """The candidate as one deployment: `known`'s settings and transforms (where the route has
    it), with what the request names."""
    values: dict[str, Any] = {"model": request.model, "weight": weight}
    if known is not None:
        values |= known.model_dump(include={"provider", "base_url", "api_key_env",
                                            "connect_timeout_s", "read_timeout_s",
                                            "transforms"},
                                   exclude_none=True)
    values["transforms"] = merged_transforms(
        values.get("transforms", []) if not request.no_transforms else [], request)
    if not values["transforms"]:
        del values["transforms"]
    for name in ("provider", "base_url", "api_key_env"):
        if getattr(request, name) is not None:
            values[name] = getattr(request, name)
    try:
        return Target.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


_PLACE = ("provider", "base_url", "api_key_env")


def _candidates(request: PromoteRequest, current: RouteSpec | None,
                share: float) -> list[Target]:
    """The candidate's deployments after the promotion, sharing `share`. Those the route's
    targets have (the same model at other base_urls or providers: one canary arm) keep their
    places and their weights' ratio; else the model's settings where the route has it (a
    fallback: a fine-tune promoted again after a newer one took its place), or new. A request
    naming a place (provider, base_url, key variable) routes the one deployment named."""
    named = {name: getattr(request, name) for name in _PLACE
             if getattr(request, name) is not None}
    targets = [t for t in current.targets if t.model == request.model] if current else []
    if targets and not named:
        return [_candidate(request, t, weight)
                for t, weight in _shares(targets, targets[0], share)]
    places = [*current.targets, *current.fallbacks] if current else []
    mine = [t for t in places if t.model == request.model]
    known = next((t for t in mine if all(getattr(t, k) == v for k, v in named.items())),
                 mine[0] if mine else None)
    return [_candidate(request, known, share)]


def _shares(arm: list[Target], chosen: Target, total: float) -> list[tuple[Target, float]]:
    """One model's deployments with their weights sharing `total`, in their ratio (all of it on
    `chosen` when every one was drained to 0)."""
    weights = sum(t.weight for t in arm)
    if weights <= 0:
        return [(t, total if t is chosen else 0.0) for t in arm]
    return [(t, total * t.weight / weights) for t in arm]


def _unique(targets: list[Target]) -> list[Target]:
    kept: list[Target] = []
    for target in targets:
        if not any(_same(target, k) for k in kept):
            kept.append(target)
    return kept


def route_level_moved(spec: RouteSpec) -> RouteSpec:
    """The route with its route-level `prompt_suffix`/`stop` (routes stored before per-target
    transforms) moved onto each target and fallback: what each receives is unchanged."""
    if spec.prompt_suffix is None and spec.stop is None:
        return spec
    moved: list[dict[str, Any]] = []
    if spec.prompt_suffix:
        moved.append({"type": "legacy_separator", "separator": spec.prompt_suffix})
    if spec.stop is not None:
        moved.append({"type": "stop", "stop": spec.stop})

    def with_moved(target: Target) -> dict[str, Any]:
        data = target.model_dump(exclude_none=True)
        own = {t["type"] for t in data.get("transforms", [])}
        data["transforms"] = data.get("transforms", []) + [t for t in moved
                                                            if t["type"] not in own]
        return data

    data = spec.model_dump(exclude_none=True, exclude={"prompt_suffix", "stop"})
    data["targets"] = [with_moved(t) for t in spec.targets]
    data["fallbacks"] = [with_moved(t) for t in spec.fallbacks]
    return RouteSpec.model_validate(data)


_TARGET_FLAGS = (("provider", "--provider"), ("base_url", "--base-url"),
                 ("api_key_env", "--api-key-env"), ("prompt_suffix", "--prompt-suffix"),
                 ("strip_template", "--strip-template"), ("system_prompt", "--system-prompt"))


def promote_command(alias: str, request: PromoteRequest, share: float) -> str:
    """`tuneloop promote …` that makes the same request: the candidate's target (provider,
    server, key variable) and transforms included, so a canary reaches the same model."""
    parts = ["tuneloop", "promote", "--alias", quote(alias), "--model", quote(request.model),
             "--canary", f"{share:g}"]
    for field_name, flag in _TARGET_FLAGS:
        value = getattr(request, field_name)
        if value is not None:
            parts += [flag, quote(value)]
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    for stop in stops:  # the CLI takes one; a list is written as the flag repeated
        parts += ["--stop", quote(stop)]
    return " ".join(parts)


def candidate_alone(request: PromoteRequest) -> RouteSpec:
    """The candidate's target as the request names it, alone in a route: what a canary asked
    on an alias with no route is checked as (its transforms and templates, by the caller,
    which knows the templates) before it is refused with the commands to run, so options that
    cannot go together are refused as such, never printed as a command that would fail."""
    return RouteSpec(targets=_candidates(request, None, min(request.canary, FULL)))


def _no_route_for_canary(alias: str, request: PromoteRequest, share: float) -> str:
    """A canary shares traffic with the current target: with no route there is none. Say
    how to create the route (keeping today's traffic where it goes: the default upstream,
    as model `alias`), then the canary again, exactly as asked; never to promote the
    candidate fully."""
    create = f"tuneloop promote --alias {quote(alias)} --model {quote(alias)}"
    again = promote_command(alias, request, share)
    return (f"{alias!r} has no route yet, so there is no current target to share a canary "
            f"with (its requests go to the default upstream as model {alias!r}). Create the "
            f"route first, serving what it serves today: `{create}` (or `tuneloop routes set` "
            f"with a route for it), then start the canary: `{again}`")


def _refuse_canary(alias: str, current: RouteSpec, model: str, share: float,
                   stable: Target | None, open_canary: str | None) -> None:
    """A canary shares the alias with ONE model it is compared with, the stable target: refuse
    one that would leave none (the model already serves everything), make an open, untested
    canary the stable one (a canary of the stable model itself: the open canary would get the
    rest), or drop a model a person's split still serves (A/B)."""
    if stable is None:
        raise Conflict(f"{alias!r} already sends all its traffic to {model}: there is no "
                       "current target to share a canary with")
    if stable.model == open_canary:
        raise Conflict(f"{alias!r} has an open canary of {open_canary} (untested) beside "
                       f"{model}: a canary of {model} would give {open_canary} "
                       f"{FULL - share:g}% of the traffic. Settle that canary first: `tuneloop "
                       f"rollback --alias {quote(alias)}`, or promote one of them fully")
    settled = [t for t in current.targets
               if t.weight > 0 and t.model not in (model, open_canary, stable.model)]
    if settled:
        split = ", ".join(t.model for t in [stable, *settled])
        raise Conflict(f"{alias!r} splits its traffic between {split}: a canary is compared "
                       f"with one current model and would drop the others. Set the route to "
                       f"one model first (`tuneloop promote --alias {quote(alias)} --model "
                       f"{quote(stable.model)}`), then start the canary")


def promoted_spec(alias: str, current: RouteSpec | None, request: PromoteRequest,
                  open_canary: str | None = None) -> RouteSpec:
    """`open_canary`: the model of the route's open canary, if any (never the stable one)."""
    share = min(request.canary, FULL)
    if not request.full and request.model == alias:
        raise BadRequest(f"model: a canary of {alias!r} on the alias {alias!r} itself would send "
                         f"{share:g}% of its traffic to the default upstream as model {alias!r}; "
                         "name the model to try", param="model")
    if current is not None:
        current = route_level_moved(current)
    candidates = _candidates(request, current, share)
    if current is None:
        if not request.full:
            raise Conflict(_no_route_for_canary(alias, request, share))
        return RouteSpec(targets=candidates)
    stable = stable_target(current, request.model, open_canary)
    # the stable model's deployments (other base_urls or providers): one stable arm
    arm = [] if stable is None else [t for t in current.targets if t.model == stable.model]
    kept = [t for t in current.fallbacks if t.model != request.model] \
        if request.keep_fallbacks else []
    if request.full:
        targets = candidates
        # an open canary is untested: never the previous model a fallback keeps
        previous = [t.model_copy(update={"weight": FULL})
                    for t in sorted(arm, key=lambda t: t.weight, reverse=True)] \
            if stable is not None and stable.model != open_canary \
            and request.previous_as_fallback else []
        fallbacks = _unique(previous + kept)
    else:
        _refuse_canary(alias, current, request.model, share, stable, open_canary)
        assert stable is not None
        targets = [t.model_copy(update={"weight": weight})
                   for t, weight in _shares(arm, stable, FULL - share)] + candidates
        fallbacks = kept
    update: dict[str, Any] = {"targets": targets, "fallbacks": fallbacks}
    try:
        return RouteSpec.model_validate({**current.model_dump(exclude_none=True), **update})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
