"""Which key goes to which host. Hosts and keys come from the settings and the routes, never
from a request, and an app's secret goes only to the host the app chose: the default
upstream (`settings.upstream`, the one the proxy was put in front of).

- a target with `api_key_env`: that variable's key, wherever the target is;
- a target at the default upstream's origin: the server's key when the proxy issues keys to
  apps (their keys are ours), else the app's own key, else OPENAI_API_KEY;
- a target at any other origin: no key at all (a self-hosted server without auth). Neither the
  app's key nor the server's ever travels there; `keyless_elsewhere` says so when such a
  route is set.

Whose request it is (`client_credential`: an open canary's per-key share of background
opinions and its rows' `client_key`) is told only by a credential somebody checks: the proxy's
own key when it issues keys, else the app's own key when both canary arms get it (their
upstream checks it). A header nobody checks (an `x-api-key` the proxy never forwards, a key the
arms never get) tells nothing: every such request is the same anonymous client, however its
headers vary; one credential is one client however its header spells the scheme
(`normalized`). Client addresses are not used: behind a load balancer every app has the same
one, and one client can have many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from proxy.auth import bearer
from proxy.routing import OPENAI_COMPATIBLE, RouteSpec, Target
from tuneloop.config import Settings
from tuneloop.errors import BadRequest, UpstreamUnreachable


def origin_of(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of an http(s) URL, lower-cased, default ports dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return scheme, f"{host}:invalid-port"
    default = 443 if scheme == "https" else 80
    return scheme, host if port in (None, default) else f"{host}:{port}"


def at_default_upstream(settings: Settings, target: Target) -> bool:
    """Whether an OpenAI-compatible target is served at the default upstream's origin."""
    return target.base_url is None or origin_of(target.base_url) == origin_of(settings.upstream)


def target_origin(settings: Settings, target: Target) -> tuple[str, str]:
    """The origin an OpenAI-compatible target's requests go to."""
    return origin_of(target.base_url or settings.upstream)


def same_credentials(settings: Settings, headers: Mapping[str, str], first: Target,
                     second: Target) -> bool:
    """Whether two OpenAI-compatible targets get the very same credentials at the same origin
    (asking the second sends the app's key nowhere it would not go anyway)."""
    if first.provider != OPENAI_COMPATIBLE or second.provider != OPENAI_COMPATIBLE \
            or target_origin(settings, first) != target_origin(settings, second):
        return False
    try:
        return upstream_credentials(settings, headers, first) \
            == upstream_credentials(settings, headers, second)
    except UpstreamUnreachable:  # a key variable not set: that target gets nothing
        return False


def upstream_credentials(settings: Settings, headers: Mapping[str, str],
                         target: Target) -> dict[str, str]:
    """The credential headers a request to `target` carries (see the module's docstring);
    `headers`: the app's request headers."""
    if target.api_key_env:
        key = settings.env_secret(target.api_key_env)
        if key is None:
            raise UpstreamUnreachable(
                f"the route's key variable {target.api_key_env} is not set",
                code="missing_upstream_key",
            )
        return {"authorization": f"Bearer {key}"}
    if not at_default_upstream(settings, target):
        return {}
    server_key = settings.openai_api_key
    server = {"authorization": f"Bearer {server_key.get_secret_value()}"} if server_key else {}
    if settings.issue_keys:  # the client's key is ours: it never goes upstream
        return server
    return own_credentials(headers) or server


def own_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """The app's own key header as the default upstream gets it when the proxy issues no keys:
    `authorization`, else `api-key` ({}: neither; an `x-api-key` never goes upstream)."""
    for name in ("authorization", "api-key"):
        if name in headers:
            return {name: headers[name]}
    return {}


def client_credential(settings: Settings, headers: Mapping[str, str],
                      arms: Sequence[Target]) -> str:
    """The credential that tells this request's client from others (see the module's
    docstring); `arms`: the targets that may be asked (an open canary's two arms). "": the
    anonymous client, one for all requests without a checked credential."""
    if settings.issue_keys:  # checked by the proxy itself (proxy/auth.py KeyRing)
        return bearer(headers) or ""
    own = own_credentials(headers)
    if not own or not arms:
        return ""
    for target in arms:
        try:
            if target.provider != OPENAI_COMPATIBLE \
                    or upstream_credentials(settings, headers, target) != own:
                return ""  # a litellm provider gets the operator's key, never the app's
        except UpstreamUnreachable:  # its key variable is not set: it gets nothing
            return ""
    return normalized(next(iter(own.values())))


def presented_credential(settings: Settings, headers: Mapping[str, str]) -> str:
    """The credential the request presents, checked or not: the issued key when the proxy
    issues them, else the app's own key header (`normalized`); "" for none. Only for what a
    made-up credential gains nothing from: a window of its own among the hot sticky keys
    (proxy/hot_keys.py `HotKeys`), where a client must not share another's window."""
    if settings.issue_keys:
        return bearer(headers) or ""
    own = own_credentials(headers)
    return normalized(next(iter(own.values()))) if own else ""


def normalized(credential: str) -> str:
    """One credential however its header is spelled (r14j LOW 5): an upstream takes the
    scheme in any case (RFC 7235) and surrounding whitespace, so `Bearer sk-x`, `bearer sk-x`
    and `BEARER  sk-x` are one client (a bearer token as the bare token, as `bearer()` reads
    an issued key; another scheme in lower case before its credentials)."""
    parts = credential.split(maxsplit=1)
    if len(parts) < 2:
        return credential.strip()
    scheme, rest = parts[0].lower(), parts[1].strip()
    return rest if scheme == "bearer" else f"{scheme} {rest}"


def keyless_elsewhere(settings: Settings, alias: str, spec: RouteSpec) -> list[str]:
    """Warnings for the route's OpenAI-compatible targets at another origin than the default
    upstream without `api_key_env`: they get no key at all (allowed: a server without auth)."""
    warnings: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    for target in [*spec.targets, *spec.fallbacks]:
        if target.provider != OPENAI_COMPATIBLE or target.api_key_env \
                or at_default_upstream(settings, target) \
                or (target.model, target.base_url) in seen:
            continue
        seen.add((target.model, target.base_url))
        warnings.append(
            f"route {alias!r}: {target.model} at {target.base_url} has no api_key_env, so its "
            "requests carry no key (the apps' keys and OPENAI_API_KEY go only to the default "
            f"upstream {settings.upstream}); name the variable holding its key with "
            "api_key_env (--api-key-env) unless that server needs none")
    return warnings


def refuse_unset_keys(settings: Settings, names: list[str | None], where: str) -> None:
    """BadRequest when a route names a key variable the proxy's environment does not hold
    (every request to that target would fail)."""
    for name in names:
        if name and settings.env_secret(name) is None:
            raise BadRequest(f"{where}: the key variable {name} is not set in the proxy's "
                             "environment (every request to this target would fail); set it "
                             "where the proxy runs and restart it, or name another",
                             param="api_key_env")
