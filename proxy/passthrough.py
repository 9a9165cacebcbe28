"""`GET /v1/models` (upstream models plus our aliases) and every other `/v1/*` path, relayed
unchanged and not logged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from proxy.assemble import BodyDecoder
from proxy.body import BodyLimits, check_json_depth, read_body
from proxy.capture import parse_json
from proxy.context import ProxyContext, context_of
from proxy.forward import RawResponse, upstream_credentials
from proxy.headers import downstream_headers, upstream_headers
from proxy.incoming import Incoming
from proxy.reply import Timeouts, UpstreamCut, UpstreamReply
from proxy.routing import default_plan
from tuneloop.errors import UpstreamTimeout


async def _forward(ctx: ProxyContext, incoming: Incoming, body: bytes | None) -> UpstreamReply:
    if ctx.settings.issue_keys:
        ctx.keys.check(incoming.headers)
    headers = upstream_headers(incoming.headers, ctx.settings.forward_headers)
    headers.update(upstream_credentials(ctx, incoming.headers, default_plan("-").attempts[0]))
    url = ctx.settings.upstream + incoming.suffix
    timeouts = Timeouts(ctx.settings.connect_timeout_s, ctx.settings.read_timeout_s)
    return await ctx.http.send(incoming.method, url, headers, body, timeouts)


async def passthrough(request: Request) -> Response:
    ctx = context_of(request)
    incoming = Incoming.from_scope(request.scope)  # the path is refused before the body is read
    body = await read_body(request.receive, incoming.headers,
                           BodyLimits.passthrough(ctx.settings))
    check_json_depth(body, incoming.headers.get("content-type", ""), ctx.settings.max_json_depth)
    reply = await _forward(ctx, incoming, body if body or request.method not in ("GET", "HEAD")
                           else None)
    ctx.metrics.count("passthrough", reply.status)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in reply.chunks():
                yield chunk
        except (UpstreamCut, UpstreamTimeout):
            return  # nothing more to relay; the client sees the body end early
        finally:
            reply.release()

    response = StreamingResponse(relay(), status_code=reply.status)
    response.raw_headers = downstream_headers(reply.headers)
    return response


async def list_models(request: Request) -> Response:
    """Upstream models plus the route aliases, so apps can discover `support-bot`."""
    ctx = context_of(request)
    reply = await _forward(ctx, Incoming.from_scope(request.scope), None)
    try:
        raw = await reply.read()
    finally:
        reply.release()
    ctx.metrics.count("models", reply.status)
    decoded = BodyDecoder(reply.content_encoding).decode(raw)
    listing = parse_json(decoded)
    if reply.status != 200 or not isinstance(listing, dict):
        return RawResponse(raw, reply.status, downstream_headers(reply.headers))
    found = listing.get("data")
    data: list[Any] = found if isinstance(found, list) else []
    known = {m.get("id") for m in data if isinstance(m, dict)}
    now = int(time.time())
    for alias in ctx.router.aliases:
        if alias not in known:
            data.append({"id": alias, "object": "model", "created": now, "owned_by": "tuneloop"})
    listing["data"] = data
    headers = [(k, v) for k, v in downstream_headers(reply.headers)
               if k not in (b"content-encoding",)]
    return RawResponse(orjson.dumps(listing), 200, headers)
