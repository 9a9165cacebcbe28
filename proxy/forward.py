"""The logged OpenAI endpoints: route, forward, relay byte-for-byte, capture.

Streams are relayed chunk by chunk as they arrive; the interaction is spooled before the chunk
that ends the stream (`[DONE]`, `response.completed`) is passed on, so a client that has seen
the end of its stream can rely on the interaction being on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.assemble import ASSEMBLERS, BodyDecoder, StreamAssembler
from proxy.body import BodyLimits, parse_payload, read_body
from proxy.capture import Capture, parse_json
from proxy.context import ProxyContext
from proxy.headers import ClientMeta, client_meta, downstream_headers, upstream_headers
from proxy.ids import uuid7
from proxy.incoming import API_PREFIX, Incoming, plain_path
from proxy.reply import Timeouts, UpstreamCut, UpstreamReply
from proxy.routing import OPENAI_COMPATIBLE, Attempt, Plan, RouteSpec
from tuneloop.errors import (
    RequestTimeout,
    TuneloopError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

log = logging.getLogger("tuneloop.proxy")
ID_HEADER = b"x-tuneloop-id"


def upstream_credentials(ctx: ProxyContext, headers: Mapping[str, str],
                         attempt: Attempt) -> dict[str, str]:
    """Which key goes upstream: the route's own key, the proxy's key when it issues keys to
    apps, else the client's key, else OPENAI_API_KEY."""
    if attempt.target.api_key_env:
        key = ctx.settings.env_secret(attempt.target.api_key_env)
        if key is None:
            raise UpstreamUnreachable(
                f"the route's key variable {attempt.target.api_key_env} is not set",
                code="missing_upstream_key",
            )
        return {"authorization": f"Bearer {key}"}
    server_key = ctx.settings.openai_api_key
    if ctx.settings.issue_keys:
        return {"authorization": f"Bearer {server_key.get_secret_value()}"} if server_key else {}
    if "authorization" in headers:
        return {"authorization": headers["authorization"]}
    if "api-key" in headers:
        return {"api-key": headers["api-key"]}
    return {"authorization": f"Bearer {server_key.get_secret_value()}"} if server_key else {}


def body_for(attempt: Attempt, spec: RouteSpec | None, endpoint: str, raw: bytes,
             payload: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """A model that is not an alias goes upstream byte-for-byte; an alias is rewritten to its
    target, with the route's prompt suffix and stop sequence for legacy-format models."""
    if attempt.role == "default" or spec is None:
        return raw, payload
    changed = dict(payload)
    changed["model"] = attempt.target.model
    if spec.prompt_suffix and endpoint == "completions":
        changed["prompt"] = _with_suffix(payload.get("prompt"), spec.prompt_suffix)
    if spec.stop is not None and payload.get("stop") is None and endpoint in (
        "completions", "chat.completions"
    ):
        changed["stop"] = spec.stop
    return orjson.dumps(changed), changed


def _with_suffix(prompt: Any, suffix: str) -> Any:
    if isinstance(prompt, str):
        return prompt if prompt.endswith(suffix) else prompt + suffix
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return [p if p.endswith(suffix) else p + suffix for p in prompt]
    return prompt


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


class LoggedEndpoint:
    """A logged OpenAI endpoint as a plain ASGI app: the hot path builds no Request object."""

    def __init__(self, path: str, endpoint: str):
        self.path = path
        self.suffix = path[len(API_PREFIX):]
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: ProxyContext = scope["app"].state.ctx
        try:
            plain = plain_path(scope, self.path) and not scope["query_string"]
            incoming = Incoming.from_scope(scope, self.suffix if plain else None)
            response = await handle_logged(ctx, incoming, receive, self.endpoint)
        except TuneloopError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unexpected error on %s", self.path)
            response = error_response(TuneloopError("the proxy hit an internal error; it has "
                                                    "been logged"))
        await response(scope, receive, send)


async def handle_logged(ctx: ProxyContext, incoming: Incoming, receive: Receive,
                        endpoint: str) -> Response:
    body = await read_body(receive, incoming.headers, BodyLimits.logged(ctx.settings))
    payload = parse_payload(body, ctx.settings.max_json_depth)
    meta = client_meta(incoming.headers)
    if ctx.settings.issue_keys:
        ctx.keys.check(incoming.headers)
    plan = ctx.router.plan(payload.get("model"), meta.sticky_key)
    stream = payload.get("stream") is True and endpoint != "embeddings"
    capture = Capture(uuid7(), endpoint, meta, body, payload, stream)
    try:
        reply = await _send_with_fallbacks(ctx, incoming, capture, plan, body, payload)
    except TuneloopError as exc:
        finish = "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
        logged = _log(ctx, capture, meta, status=exc.status_code, response=exc.to_openai(),
                      finish=finish, error=exc.message)
        ctx.metrics.count(endpoint, exc.status_code)
        return error_response(exc, capture.interaction_id if logged else None)
    ctx.metrics.count(endpoint, reply.status)
    if stream and reply.status == 200 and "text/event-stream" in reply.content_type:
        return _stream_response(ctx, capture, meta, reply)
    return await _plain_response(ctx, capture, meta, reply)


async def _send_with_fallbacks(
    ctx: ProxyContext, incoming: Incoming, capture: Capture, plan: Plan, body: bytes,
    payload: dict[str, Any],
) -> UpstreamReply:
    last = len(plan.attempts) - 1
    for number, attempt in enumerate(plan.attempts):
        target = attempt.target
        capture.upstream_model = target.model
        capture.provider = target.provider
        capture.route = None if plan.alias is None else {
            **attempt.describe(), "attempt": number, "primary": plan.attempts[0].target.model}
        timeouts = Timeouts(
            target.connect_timeout_s or attempt.connect_timeout_s
            or ctx.settings.connect_timeout_s,
            target.read_timeout_s or attempt.read_timeout_s or ctx.settings.read_timeout_s,
        )
        sent_body, sent_payload = body_for(attempt, plan.spec, capture.endpoint, body, payload)
        started = time.perf_counter()
        try:
            reply = await _send(ctx, incoming, attempt, sent_body, sent_payload, timeouts,
                                capture.endpoint)
        except (UpstreamUnreachable, UpstreamTimeout):
            if number == last:
                raise
            ctx.metrics.fallbacks.labels(plan.alias or "").inc()
            continue
        ctx.metrics.observe_upstream(capture.endpoint, time.perf_counter() - started)
        if reply.status >= 500 and number < last:
            reply.release()
            ctx.metrics.fallbacks.labels(plan.alias or "").inc()
            continue
        capture.first_byte()
        return reply
    raise AssertionError("a plan has at least one attempt")


async def _send(ctx: ProxyContext, incoming: Incoming, attempt: Attempt, body: bytes,
                payload: dict[str, Any], timeouts: Timeouts, endpoint: str) -> UpstreamReply:
    target = attempt.target
    credentials = upstream_credentials(ctx, incoming.headers, attempt)
    if target.provider != OPENAI_COMPATIBLE:
        key = credentials.get("authorization", "").removeprefix("Bearer ") or None
        return await ctx.litellm.send(
            endpoint, target.provider, target.model, payload, target.base_url,
            key if target.api_key_env else None, timeouts.connect_s, timeouts.read_s,
        )
    url = (target.base_url or ctx.settings.upstream) + incoming.suffix
    headers = upstream_headers(incoming.headers)
    headers.update(credentials)
    return await ctx.http.send_logged(incoming.method, url, headers, body, timeouts)


def _log(ctx: ProxyContext, capture: Capture, meta: ClientMeta, *, status: int | None,
         response: Any, finish: str, error: str | None) -> bool:
    """Spool the interaction once. False when it was not logged (no-log, or spool full)."""
    if capture.logged:
        return True
    capture.logged = True
    if meta.no_log:
        return False
    record = capture.record(status_code=status, response=response, finish=finish, error=error,
                            prices=ctx.prices, redactor=ctx.redactor)
    try:
        return ctx.writer.log(record)
    except Exception:  # a storage failure never fails a request
        log.exception("could not spool interaction %s", capture.interaction_id)
        return False


def _error_text(status: int, response: Any, raw: bytes) -> str | None:
    if status < 400:
        return None
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        message = response["error"].get("message")
        if isinstance(message, str):
            return message
    return raw[:500].decode("utf-8", "replace") or f"HTTP {status}"


async def _plain_response(ctx: ProxyContext, capture: Capture, meta: ClientMeta,
                          reply: UpstreamReply) -> Response:
    try:
        raw = await reply.read()
    except (UpstreamCut, UpstreamTimeout) as exc:
        is_timeout = isinstance(exc, UpstreamTimeout)
        error: TuneloopError = (exc if isinstance(exc, UpstreamTimeout) else UpstreamUnreachable(
            f"the upstream closed the connection mid-response: {exc}", code="upstream_cut"))
        logged = _log(ctx, capture, meta, status=error.status_code, response=error.to_openai(),
                      finish="timeout" if is_timeout else "upstream_cut", error=error.message)
        return error_response(error, capture.interaction_id if logged else None)
    finally:
        reply.release()
    decoded = BodyDecoder(reply.content_encoding).decode(raw)
    response = parse_json(decoded)
    if response is None and decoded:
        response = {"unparsed_body": decoded[:10_000].decode("utf-8", "replace")}
    logged = _log(ctx, capture, meta, status=reply.status, response=response,
                  finish="upstream_error" if reply.status >= 400 else "completed",
                  error=_error_text(reply.status, response, decoded))
    headers = downstream_headers(reply.headers)
    if logged:
        headers.append((ID_HEADER, capture.interaction_id.encode()))
    return RawResponse(raw, reply.status, headers)


def _stream_response(ctx: ProxyContext, capture: Capture, meta: ClientMeta,
                     reply: UpstreamReply) -> Response:
    assembler = ASSEMBLERS.get(capture.endpoint, ASSEMBLERS["chat.completions"])(
        reply.content_encoding
    )
    response = StreamingResponse(_relay(ctx, capture, meta, reply, assembler),
                                 status_code=reply.status)
    headers = downstream_headers(reply.headers)
    if not meta.no_log:
        headers.append((ID_HEADER, capture.interaction_id.encode()))
    response.raw_headers = headers
    return response


def _stream_error_event(exc: TuneloopError) -> bytes:
    return b"data: " + orjson.dumps(exc.to_openai()) + b"\n\n"


async def _relay(ctx: ProxyContext, capture: Capture, meta: ClientMeta, reply: UpstreamReply,
                 assembler: StreamAssembler) -> AsyncIterator[bytes]:
    def finish(kind: str, error: str | None = None) -> None:
        if assembler.error is not None and kind == "completed":
            kind, error = "upstream_error", str(assembler.error)[:2000]
        _log(ctx, capture, meta, status=reply.status, response=assembler.result(),
             finish=kind, error=error)

    try:
        try:
            async for chunk in reply.chunks():
                assembler.feed(chunk)
                if assembler.done and not capture.logged:
                    finish("completed")
                yield chunk
        except UpstreamTimeout as exc:
            finish("timeout", exc.message)
            yield _stream_error_event(exc)
            return
        except UpstreamCut as exc:
            cut = UpstreamUnreachable(f"the upstream cut the stream: {exc}", code="upstream_cut")
            finish("upstream_cut", cut.message)
            yield _stream_error_event(cut)
            return
        if not capture.logged:
            if assembler.done or capture.endpoint not in ASSEMBLERS:
                finish("completed")
            else:
                cut = UpstreamUnreachable("the upstream ended the stream before its end marker",
                                          code="upstream_cut")
                finish("upstream_cut", cut.message)
                yield _stream_error_event(cut)
    finally:
        if not capture.logged:
            finish("client_disconnected", "the client closed the connection mid-stream")
        reply.release()
