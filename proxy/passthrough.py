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
from proxy.body import (
    BOM,
    SPACE,
    BodyLimits,
    BodyReader,
    check_json_depth,
    is_multipart,
    looks_like_json,
    too_large,
)
from proxy.capture import parse_json
from proxy.context import ProxyContext, context_of
from proxy.forward import RawResponse
from proxy.headers import downstream_headers, upstream_headers
from proxy.incoming import Incoming
from proxy.reply import Timeouts, UpstreamCut, UpstreamReply
from proxy.routing import default_plan
from proxy.upstream_keys import upstream_credentials
from tuneloop.errors import UpstreamTimeout


async def _forward(ctx: ProxyContext, incoming: Incoming,
                   body: bytes | AsyncIterator[bytes] | None,
                   length: str | None = None) -> UpstreamReply:
    headers = upstream_headers(incoming.headers, ctx.settings.forward_headers)
    headers.update(upstream_credentials(ctx.settings, incoming.headers,
                                        default_plan("-").attempts[0].target))
    if length is not None:  # a relayed body keeps its declared length (else: chunked)
        headers["content-length"] = length
    url = ctx.settings.upstream + incoming.suffix
    timeouts = Timeouts(ctx.settings.connect_timeout_s, ctx.settings.read_timeout_s)
    return await ctx.http.send(incoming.method, url, headers, body, timeouts)


async def _request_body(ctx: ProxyContext, reader: BodyReader, incoming: Incoming
                        ) -> tuple[bytes | AsyncIterator[bytes] | None, str | None]:
    """The body to forward, and its declared length when it is relayed as it arrives.

    A body that starts like JSON is read whole (within `max_body_bytes`, OpenAI's JSON
    requests are small) and its depth checked; any other body (multipart file uploads, raw
    bytes) is relayed to the upstream piece by piece as it arrives, never held in memory
    whole, within `max_passthrough_bytes` and the body time limits."""
    settings = ctx.settings
    content_type = incoming.headers.get("content-type", "")
    head = b""
    while not reader.done and len(head) < 4096 and not head.removeprefix(BOM).lstrip(SPACE):
        head += await reader.next()
    if not is_multipart(content_type) and looks_like_json(head):
        reader.max_bytes = min(reader.max_bytes, settings.max_body_bytes)
        if reader.size > reader.max_bytes:
            raise too_large(reader.max_bytes)
        body = b"".join([chunk async for chunk in reader.rest(head)])
        check_json_depth(body, content_type, settings.max_json_depth)
        return body, None
    if reader.done:
        return (head if head or incoming.method not in ("GET", "HEAD") else None), None
    declared = incoming.headers.get("content-length")
    return reader.rest(head), declared if declared and declared.isdigit() else None


async def passthrough(request: Request) -> Response:
    ctx = context_of(request)
    incoming = Incoming.from_scope(request.scope)  # the path is refused before the body is read
    if ctx.settings.issue_keys:  # and so is a caller without a key
        ctx.keys.check(incoming.headers)
    reader = BodyReader(request.receive, incoming.headers, BodyLimits.passthrough(ctx.settings))
    body, length = await _request_body(ctx, reader, incoming)
    try:
        reply = await _forward(ctx, incoming, body, length)
    except Exception:
        if reader.error is not None:  # the client's body failed while it was relayed
            raise reader.error from None
        raise
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
    incoming = Incoming.from_scope(request.scope)
    if ctx.settings.issue_keys:
        ctx.keys.check(incoming.headers)
    reply = await _forward(ctx, incoming, None)
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
