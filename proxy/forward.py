"""To the upstream and back: what body an alias sends, one attempt of
a plan, and the OpenAI-shaped error answers of the Starlette handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response

from proxy.context import ProxyContext
from proxy.headers import upstream_headers
from proxy.reply import Timeouts, UpstreamReply
from proxy.routing import OPENAI_COMPATIBLE, Attempt
from proxy.transforms import UNCHANGED
from proxy.upstream_keys import upstream_credentials
from tuneloop.errors import RequestTimeout, TemplateMismatch, TuneloopError

ID_HEADER = b"x-tuneloop-id"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The body one attempt sends: `transformed` when the target's transforms changed more
    than the model name (the logged row then keeps it beside the app's request)."""

    body: bytes
    payload: dict[str, Any]
    transformed: bool = False
    mismatch: TemplateMismatch | None = None
    stops_dropped: tuple[str, ...] = ()


def body_for(attempt: Attempt, endpoint: str, raw: bytes, payload: dict[str, Any]) -> Outgoing:
    """A model that is not an alias goes upstream byte-for-byte; an alias is rewritten to its
    target, with the target's own transforms (proxy.transforms) applied."""
    if attempt.role == "default":
        return Outgoing(raw, payload)
    applied = attempt.transforms.apply(endpoint, payload) if attempt.transforms else UNCHANGED
    changed = dict(applied.payload if applied.payload is not None else payload)
    changed["model"] = attempt.target.model
    return Outgoing(orjson.dumps(changed), changed, applied.payload is not None,
                    applied.mismatch, applied.stops_dropped)


class RawResponse(Response):
    def __init__(self, body: bytes, status_code: int, headers: list[tuple[bytes, bytes]]):
        super().__init__(body, status_code)
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]


def error_response(exc: TuneloopError, interaction_id: str | None = None) -> Response:
    headers = [(b"content-type", b"application/json")]
    if isinstance(exc, RequestTimeout):  # the rest of a slow body is not worth waiting for
        headers.append((b"connection", b"close"))
    if interaction_id is not None:
        headers.append((ID_HEADER, interaction_id.encode()))
    return RawResponse(orjson.dumps(exc.to_openai()), exc.status_code, headers)


def timeouts_for(ctx: ProxyContext, attempt: Attempt) -> Timeouts:
    """The target's own timeouts, else its route's, else the settings'."""
    target = attempt.target
    return Timeouts(
        target.connect_timeout_s or attempt.connect_timeout_s or ctx.settings.connect_timeout_s,
        target.read_timeout_s or attempt.read_timeout_s or ctx.settings.read_timeout_s,
    )


async def send_attempt(ctx: ProxyContext, attempt: Attempt, endpoint: str,
                       client_headers: Mapping[str, str], suffix: str, body: bytes,
                       payload: dict[str, Any], timeouts: Timeouts) -> UpstreamReply:
    """One attempt of a plan: to a litellm provider, or POST to an OpenAI-compatible upstream
    at the target's (or the default) base URL plus the checked `suffix`."""
    target = attempt.target
    credentials = upstream_credentials(ctx.settings, client_headers, target)
    if target.provider != OPENAI_COMPATIBLE:
        key = credentials.get("authorization", "").removeprefix("Bearer ") or None
        return await ctx.litellm.send(
            endpoint, target.provider, target.model, payload, target.base_url,
            key if target.api_key_env else None, timeouts.connect_s, timeouts.read_s,
        )
    url = (target.base_url or ctx.settings.upstream) + suffix
    headers = upstream_headers(client_headers, ctx.settings.forward_headers)
    headers.update(credentials)
    return await ctx.http.send_logged("POST", url, headers, body, timeouts)
