"""The route table: aliases the apps send, mapped to weighted targets with ordered fallbacks.

A model name that is not an alias goes to the default upstream unchanged. The canary draw is
random per request, or sticky per user/session when the client names one: a keyed hash of
alias and key (the key is the proxy's secret `draw_salt`, so a client cannot work out offline
which user ids land on the canary), so the same user keeps seeing the same target while the
weights stay put. A key that sends too large a share of its client's recent requests to an
alias (an app sending one constant `user` for all its users) is drawn per request instead: one
key must not put all the traffic on one target (see :class:`HotKeys`). Each plan says which
draw it used (`Plan.draw`), and the interaction's `route` records it, so the canary's
statistics count a sticky user's requests as the cluster they are (storage/route_health.py).

While the route has an open canary (storage/promotions.py `open_canary`), a failure gets a
*second opinion* from the other arm: a request drawn for either arm that it fails (a 4xx, a
5xx, a timeout) goes to the other arm's heaviest target (:func:`stable_target` for the
canary's) first; the app receives the second answer. The canary's statistics then tell a
failure of the model (the other one answered) from one of the request (both failed), alike on
both arms (storage/route_health.py). An arm is a model: every
deployment of the canary model (another base_url or provider) is the canary arm, every
deployment of the stable model the stable arm. A model drained to weight 0 is nobody's second
opinion. The primary's failure waits on its second opinion at most `second_opinion_timeout_s`
(proxy/second_opinion.py). While the canary is open, the answers do not say which arm gave
them (`Plan.covered`, proxy/arm_cover.py).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.hot_keys import HotKeys
from proxy.transforms import (
    TargetTransforms,
    Transform,
    check_stop,
    check_transforms,
    template_refs,
)
from tuneloop.config import MAX_ROUTE_WEIGHT
from tuneloop.errors import BadRequest
from tuneloop.prompt_template import PromptTemplate

log = logging.getLogger("tuneloop.proxy")

OPENAI_COMPATIBLE = "openai"
# Providers reached through litellm (translated to and from the OpenAI shape).
LITELLM_PROVIDERS = frozenset(
    {"anthropic", "gemini", "vertex_ai", "bedrock", "cohere", "mistral", "groq", "azure",
     "ollama", "together_ai", "deepseek", "xai"}
)


MAX_WEIGHT = MAX_ROUTE_WEIGHT
"""A target's largest weight: the route's total stays a finite number (weights are ratios).
A route written with a heavier one is refused (:meth:`RouteSpec.check`); one already stored
(written before the limit, or copied by `migrate-store`) is read with its weights scaled down
in proportion, the heaviest at MAX_WEIGHT: the same traffic split, and routing still starts
(:class:`Router` says so in the log)."""


def model_name_problem(name: str) -> str | None:
    """Why a target's model name cannot be one (blank, padded, a control character), or None."""
    if not name.strip():
        return "a model name cannot be blank"
    if name != name.strip():
        return f"the model name {name!r} starts or ends with white space"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"the model name {name!r} holds a control character"
    return None


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    provider: str = OPENAI_COMPATIBLE
    base_url: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    weight: float = Field(100.0, ge=0, allow_inf_nan=False)
    """Above MAX_WEIGHT only as read from the store, and then scaled (RouteSpec)."""
    connect_timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    read_timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    transforms: list[Transform] | None = Field(None, max_length=8)
    """Applied only to requests sent to this target (proxy.transforms)."""

    @field_validator("model")
    @classmethod
    def _a_model_name(cls, value: str) -> str:
        problem = model_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value != OPENAI_COMPATIBLE and value not in LITELLM_PROVIDERS:
            known = ", ".join(sorted({OPENAI_COMPATIBLE, *LITELLM_PROVIDERS}))
            raise ValueError(f"unknown provider {value!r}; known: {known}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/") if value else value


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Target] = Field(min_length=1, max_length=16)
    fallbacks: list[Target] = Field(default_factory=list, max_length=16)
    prompt_suffix: str | None = None
    """Routes stored before per-target transforms (and restored by a rollback to then): the
    separator appended to the prompts sent to every target. New routes carry a
    `legacy_separator` transform on the target that needs it instead."""
    stop: str | list[str] | None = None
    """Like `prompt_suffix`: the stop sequence sent to every target (merged with a request's)."""
    connect_timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    read_timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)

    _over_weight: dict[str, float] = PrivateAttr(default_factory=dict)
    """The weights above MAX_WEIGHT it was given (`targets.0` → weight), now scaled."""

    @field_validator("targets")
    @classmethod
    def _some_weight(cls, targets: list[Target]) -> list[Target]:
        if sum(t.weight for t in targets) <= 0:
            raise ValueError("at least one target needs a positive weight")
        return targets

    @model_validator(mode="after")
    def _weights_within_bound(self) -> RouteSpec:
        for kind in ("targets", "fallbacks"):
            targets: list[Target] = getattr(self, kind)
            heaviest = max((t.weight for t in targets), default=0.0)
            if heaviest <= MAX_WEIGHT:
                continue
            self._over_weight |= {f"{kind}.{i}": t.weight for i, t in enumerate(targets)
                                  if t.weight > MAX_WEIGHT}
            scale = MAX_WEIGHT / heaviest  # before multiplying: 1e308 * 1e6 is inf
            setattr(self, kind, [t.model_copy(update={"weight": min(t.weight * scale,
                                                                    MAX_WEIGHT)})
                                 for t in targets])
        return self

    @property
    def weights_scaled(self) -> dict[str, float]:
        """The weights above MAX_WEIGHT it was read with (`targets.0` → weight), scaled down
        in proportion; empty for a route within the bound."""
        return dict(self._over_weight)

    def template_refs(self) -> set[str]:
        return {ref for target in [*self.targets, *self.fallbacks]
                for ref in template_refs(target.transforms)}

    def check(self, alias: str, templates: Mapping[str, PromptTemplate]) -> None:
        """Refuse transforms that cannot work (unknown template, legacy on a chat target, a
        stop value OpenAI refuses) and weights above MAX_WEIGHT (a stored route with them is
        read scaled, never written)."""
        if self._over_weight:
            where, weight = next(iter(self._over_weight.items()))
            raise BadRequest(f"route {alias!r}: {where}.weight: Input should be less than or "
                             f"equal to {MAX_WEIGHT:.0f}, not {weight:g} (weights are ratios: "
                             "divide them all by the same number)", param=alias)
        check_stop(f"route {alias!r}", self.stop)
        for kind, targets in (("targets", self.targets), ("fallbacks", self.fallbacks)):
            for index, target in enumerate(targets):
                if target.transforms:
                    check_transforms(f"route {alias!r}: {kind}.{index} ({target.model})",
                                     target.transforms, templates)


def stable_target(spec: RouteSpec, candidate_model: str | None,
                  open_canary: str | None = None) -> Target | None:
    """The target serving the alias for sure: the heaviest that is not the candidate (of a
    promotion) nor a deployment of the open canary (an untested model, even at 60%). Beside an
    open canary a model drained to weight 0 is still the stable one (a person took it out of
    traffic for a while: the canary stays the untested model it is); the open canary only
    when the route has no other model at all."""
    others = [t for t in spec.targets if t.model != candidate_model]
    settled = [t for t in others if t.model != open_canary] if open_canary is not None else []
    pool = [t for t in settled if t.weight > 0] or settled or [t for t in others if t.weight > 0]
    return max(pool, key=lambda t: t.weight) if pool else None


def parse_route_table(raw: Any) -> dict[str, RouteSpec]:
    if not isinstance(raw, dict):
        raise BadRequest('the route table is a JSON object {"alias": {"targets": [...]}}')
    table: dict[str, RouteSpec] = {}
    for alias, spec in raw.items():
        if not isinstance(alias, str) or not 0 < len(alias) <= 256:
            raise BadRequest("an alias is a string of 1-256 characters")
        try:
            table[alias] = RouteSpec.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BadRequest(f"route {alias!r}: {where}: {first['msg']}", param=alias) from exc
    return table


@dataclass(frozen=True)
class Attempt:
    target: Target
    alias: str | None
    role: str  # "primary", "second_opinion", "fallback", or "default" (no alias)
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    transforms: TargetTransforms | None = None

    def describe(self) -> dict[str, Any]:
        return {"alias": self.alias, "target": self.target.model,
                "provider": self.target.provider, "role": self.role}


def next_attempt(attempts: Sequence[Attempt], failed: int, *, refused: bool) -> int | None:
    """The attempt to try after attempt `failed` failed, or None (its outcome stands). A 4xx
    (`refused`) goes only to a second opinion right after the primary; a 5xx, timeout or
    connection error to the next attempt (the second opinion, then the fallbacks)."""
    after = failed + 1
    if refused:
        return after if failed == 0 and after < len(attempts) \
            and attempts[after].role == "second_opinion" else None
    return after if after < len(attempts) else None


@dataclass(frozen=True)
class Plan:
    alias: str | None
    spec: RouteSpec | None
    attempts: tuple[Attempt, ...]
    draw: str = "random"
    """`sticky` (the target follows the user/session key) or `random` (drawn per request)."""
    covered: bool = False
    """The alias has an open canary: the answer does not say which arm gave it
    (proxy/arm_cover.py)."""


@functools.lru_cache(maxsize=1024)
def default_plan(model: str) -> Plan:
    """Not an alias: the default upstream, the body unchanged (cached: the hot path)."""
    target = Target.model_construct(model=model, provider=OPENAI_COMPATIBLE, base_url=None,
                                    api_key_env=None, weight=100.0, connect_timeout_s=None,
                                    read_timeout_s=None)
    return Plan(None, None, (Attempt(target, None, "default"),))


def sticky_draw(salt: bytes, alias: str, sticky_key: str) -> float:
    """Where in [0, 1) the key's requests to the alias land: a keyed hash, unknown to anyone
    without the salt."""
    digest = hashlib.blake2b(f"{alias}\x00{sticky_key}".encode(), key=salt[:64],
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def draw_salt(secret: str) -> bytes:
    """The draw's key, derived from a server secret (the admin token) for this one use."""
    return hashlib.blake2b(secret.encode(), person=b"tuneloop-draw").digest()


def _resolved(alias: str, target: Target, spec: RouteSpec,
              templates: Mapping[str, PromptTemplate]) -> TargetTransforms | None:
    missing = [ref for ref in template_refs(target.transforms) if ref not in templates]
    transforms = target.transforms
    if missing:  # templates are never deleted: only a store copied without them
        log.error("route %r: target %s names unknown templates %s; sent unstripped",
                  alias, target.model, missing)
        transforms = [t for t in transforms or () if t.type != "strip_template"]
    return TargetTransforms.build([t.model_dump() for t in transforms or ()], templates,
                                  spec.prompt_suffix, spec.stop)


@dataclass(frozen=True)
class _Route:
    spec: RouteSpec
    targets: tuple[tuple[Target, TargetTransforms | None], ...]
    fallbacks: tuple[tuple[Target, TargetTransforms | None], ...]
    canary: tuple[Target, TargetTransforms | None] | None = None
    stable: tuple[Target, TargetTransforms | None] | None = None
    """With an open canary: each arm's second opinion (the heaviest deployment of the canary
    model, the stable target), asked for any deployment of the other arm's model."""
    open_canary: str | None = None


def _route(alias: str, spec: RouteSpec, templates: Mapping[str, PromptTemplate],
           canary: str | None) -> _Route:
    targets = tuple((t, _resolved(alias, t, spec, templates)) for t in spec.targets)
    fallbacks = tuple((t, _resolved(alias, t, spec, templates)) for t in spec.fallbacks)
    stable = stable_target(spec, None, canary) if canary else None
    # a target taken out of traffic (weight 0) is nobody's second opinion
    canary_arm = [pair for pair in targets if pair[0].model == canary and pair[0].weight > 0]
    if stable is None or stable.model == canary or stable.weight <= 0 or not canary_arm:
        return _Route(spec, targets, fallbacks, open_canary=canary)
    stable_pair = next(pair for pair in targets if pair[0] is stable)
    canary_pair = max(canary_arm, key=lambda pair: pair[0].weight)
    return _Route(spec, targets, fallbacks, canary_pair, stable_pair, canary)


class Router:
    """Holds the current table; replaced as a whole when routes change (no restart).
    `templates` resolves the `strip_template` transforms' names (frozen, so never stale)."""

    def __init__(self, table: dict[str, RouteSpec] | None = None,
                 templates: Mapping[str, PromptTemplate] | None = None, *,
                 salt: bytes | None = None, canaries: Mapping[str, str] | None = None):
        self._table: dict[str, _Route] = {}
        self._scaled: dict[str, dict[str, float]] = {}
        self._salt = salt if salt is not None else random.randbytes(32)
        self._hot = HotKeys()
        self._reloading = asyncio.Lock()
        self.replace(dict(table or {}), templates or {}, canaries)

    async def reload(self, read: Callable[[], Awaitable[tuple[
            dict[str, RouteSpec], Mapping[str, PromptTemplate], Mapping[str, str]]]]) -> None:
        """Reads the route table and keeps it, one reload at a time, so the last kept is the
        last read: a reload that read before a route change could otherwise land after the
        changing request's newer read and undo it on this replica until the next change."""
        async with self._reloading:
            self.replace(*await read())

    def replace(self, table: dict[str, RouteSpec],
                templates: Mapping[str, PromptTemplate] | None = None,
                canaries: Mapping[str, str] | None = None) -> None:
        """`canaries`: each alias's open canary model (storage/promotions.py)."""
        found, open_ = templates or {}, canaries or {}
        self._table = {alias: _route(alias, spec, found, open_.get(alias))
                       for alias, spec in table.items()}
        self._warn_scaled(table)

    def _warn_scaled(self, table: Mapping[str, RouteSpec]) -> None:
        """Say once per stored route (not at every reload) that its weights were scaled."""
        scaled = {alias: spec.weights_scaled for alias, spec in table.items()
                  if spec.weights_scaled}
        for alias, weights in scaled.items():
            if self._scaled.get(alias) != weights:
                given = ", ".join(f"{where}.weight {weight:g}" for where, weight in weights.items())
                log.warning("route %r is stored with weights above %g (%s): routed with all its "
                            "weights scaled down in proportion (the same split, the heaviest at "
                            "%g). Set the route again with weights of at most %g (`tuneloop "
                            "routes set`): it would be refused as it is stored",
                            alias, MAX_WEIGHT, given, MAX_WEIGHT, MAX_WEIGHT)
        self._scaled = scaled

    @property
    def aliases(self) -> list[str]:
        return sorted(self._table)

    def plan(self, model: Any, sticky_key: str | None, client: str = "") -> Plan:
        """`client`: the request's client key (its presented credential's digest): a sticky
        key is hot or not among that client's own requests (:class:`HotKeys`)."""
        route = self._table.get(model) if isinstance(model, str) else None
        if route is None:
            return default_plan(model if isinstance(model, str) and model else "unknown")
        spec = route.spec
        total = sum(t.weight for t in spec.targets)
        sticky = sticky_key is not None and not self._hot.seen(model, sticky_key, client)
        if sticky and sticky_key is not None:
            point = sticky_draw(self._salt, model, sticky_key) * total
        else:
            point = random.random() * total
        chosen = route.targets[-1]
        for pair in route.targets:
            if point < pair[0].weight:
                chosen = pair
                break
            point -= pair[0].weight
        attempts = [Attempt(chosen[0], model, "primary", spec.connect_timeout_s,
                            spec.read_timeout_s, chosen[1])]
        if route.canary is not None and route.stable is not None:
            # an arm is a model: all its deployments (base_url, provider) alike
            if chosen[0].model == route.canary[0].model:
                other = route.stable
            elif chosen[0].model == route.stable[0].model:
                other = route.canary
            else:
                other = None
            if other is not None:
                attempts.append(Attempt(other[0], model, "second_opinion",
                                        spec.connect_timeout_s, spec.read_timeout_s, other[1]))
        attempts += [Attempt(t, model, "fallback", spec.connect_timeout_s, spec.read_timeout_s,
                             transforms) for t, transforms in route.fallbacks]
        return Plan(model, spec, tuple(attempts), "sticky" if sticky else "random",
                    covered=route.open_canary is not None)
