"""Shared machinery of the fake upstreams: recording, failure injection, SSE, aborts.

Failure injection (same for every fake, on every recorded route):

* ``state.fail_next(count, status, retry_after)`` queues programmed failures;
* header ``x-fake-fail: <status>`` (``x-fake-retry-after`` overrides the 429 default of 1 s)
  or model ``fail-<status>`` answers that status with the provider's error body;
* header ``x-fake-delay-ms: N`` or model ``slow-<N>`` sleeps N ms before answering;
* header ``x-fake-cut-after: N`` or model ``cut-<N>`` sends N stream events, then closes the
  connection without finishing the chunked body (non-streams: half the body is sent);
* header ``x-fake-reset: 1`` or model ``reset`` aborts the connection without any response;
* ``state.model_error_rate[model] = 0.3`` answers 500 (or ``state.model_error_status[model]``)
  to 30% of that model's requests, evenly;
* ``state.fail_containing[text] = status`` answers that status to every request whose body
  contains ``text`` (a document that keeps failing until the test removes the entry);
* ``state.delay_containing[text] = ms`` sleeps that long before answering every request whose
  body contains ``text`` (a model that hangs on some inputs only).

Delays (``latency_ms`` then the injected one) come first, then a failure, a reset, a cut.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

RAW_SEND_KEY = "tuneloop.fake.raw_send"
JSON_TYPE = "application/json"
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class ConnectionCutError(ConnectionError):
    """Raised when the server under the app offers no transport to close."""


@dataclass(slots=True, frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass(slots=True, frozen=True)
class ProgrammedFailure:
    status: int
    retry_after: float | None = None


@dataclass(slots=True)
class Injection:
    status: int | None = None
    retry_after: str | None = None
    delay_ms: float = 0.0
    cut_after: int | None = None
    reset: bool = False


@dataclass
class FakeStateBase:
    """State shared by every fake: what was asked, how slow and how broken to be."""

    requests: list[RecordedRequest] = field(default_factory=list)
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    record: bool = True
    failures: deque[ProgrammedFailure] = field(default_factory=deque)
    fail_containing: dict[str, int] = field(default_factory=dict)
    delay_containing: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    model_replies: dict[str, str] = field(default_factory=dict)
    """Chat and completions: a fixed answer text for a model (a worse or better model)."""
    judges: dict[str, Any] = field(default_factory=dict)
    """Chat: a model that answers as a pairwise judge (a `tests.fakes.judge.FakeJudge`)."""
    model_usage: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Chat: the fixed (prompt, completion[, cached prompt]) tokens a model's answers report."""
    model_error_rate: dict[str, float] = field(default_factory=dict)
    """A model that answers 500 to this share of its requests, spread evenly and
    deterministically (0.3: requests 4, 7, 10, ... of that model fail)."""
    model_error_status: dict[str, int] = field(default_factory=dict)
    """The status a `model_error_rate` model fails with, when not 500 (403: a model the key
    cannot access now and then)."""
    model_calls: dict[str, int] = field(default_factory=dict)

    def fail_next(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.failures.extend(ProgrammedFailure(status, retry_after) for _ in range(count))

    def next_id(self, prefix: str, width: int = 24) -> str:
        return f"{prefix}{next(self.counter):0{width}x}"

    def now(self) -> int:
        return int(self.clock())

    def reset(self) -> None:
        self.requests.clear()
        self.failures.clear()
        self.fail_containing.clear()
        self.delay_containing.clear()


ErrorBody = Callable[[int, str | None], Any]


@dataclass(slots=True)
class Call:
    """One request as handlers see it: the body read once, and parsed when it is JSON."""

    request: Request
    body: bytes
    json: Any

    @property
    def data(self) -> dict[str, Any]:
        return self.json if isinstance(self.json, dict) else {}


Handler = Callable[[Call], Awaitable[Response]]
S = TypeVar("S", bound=FakeStateBase)


def bind(handler: Callable[[Call, S], Awaitable[Response]], state: S) -> Handler:
    """A handler of (call, state) as a handler of the call alone."""

    async def run(call: Call) -> Response:
        return await handler(call, state)

    return run


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


Endpoint = Callable[..., Awaitable[Response]]  # (request, body=None) -> response


async def read_body(receive: Receive) -> bytes:
    """The whole request body, straight from the server (cheaper than Request.body())."""
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        body += message.get("body", b"")
    return body


class FakeApp(Starlette):
    """Starlette, plus: the server's own ``send`` kept in the scope (to drop connections) and
    hot POST routes served without middleware and routing (benchmarks drive them hard)."""

    def __init__(self, routes: Sequence[BaseRoute], hot_paths: Iterable[str] = ()) -> None:
        super().__init__(routes=routes)
        self.hot: dict[str, Endpoint] = {
            r.path: r.endpoint
            for r in routes
            if isinstance(r, Route) and r.path in hot_paths and r.methods == {"POST"}
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND_KEY] = send
        hot = self.hot.get(scope["path"]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        response = await hot(Request(scope, receive), await read_body(receive))
        await response(scope, receive, send)


def abort_connection(scope: Scope, *, hard: bool) -> None:
    """Close (after flushing) or abort the client's TCP connection under uvicorn."""
    cycle = getattr(scope.get(RAW_SEND_KEY), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionCutError("fake upstream dropped the connection")
    if hard:
        transport.abort()
    else:
        transport.close()
    cycle.disconnected = True  # type: ignore[union-attr]  # uvicorn then stays quiet


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(data), status, headers, JSON_TYPE)


def sse_data(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def sse_event(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class SSEResponse(Response):
    """A pre-rendered event stream that can be cut after N events.

    Without ``chunk_delay`` (``state.chunk_delay_ms``) the events go out in one write."""

    media_type = "text/event-stream"

    def __init__(self, events: list[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.events = events
        self.cut_after: int | None = None
        self.chunk_delay = 0.0
        self.init_headers({"cache-control": "no-cache", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not self.chunk_delay and self.cut_after is None:  # one write: cheap for benchmarks
            body = b"".join(self.events)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        limit = (
            len(self.events)
            if self.cut_after is None
            else min(self.cut_after, len(self.events) - 1)
        )
        for event in self.events[:limit]:
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        if self.cut_after is not None:
            abort_connection(scope, hard=False)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class CutResponse(Response):
    """Announces the whole body, sends half of it, then closes the connection."""

    def __init__(self, inner: Response) -> None:
        self.status_code = inner.status_code
        self.background = None
        self.body = inner.body
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        half = bytes(self.body[: len(self.body) // 2])
        await send({"type": "http.response.body", "body": half, "more_body": True})
        abort_connection(scope, hard=False)


class DroppedResponse(Response):
    """No response at all: the connection is aborted."""

    def __init__(self) -> None:
        self.status_code = 500
        self.background = None
        self.raw_headers = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        abort_connection(scope, hard=True)


def parse_json(body: bytes) -> Any:
    if not body or body[:1] not in b"{[":
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def record(state: FakeStateBase, request: Request, body: bytes, parsed: Any) -> None:
    scope = request.scope
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    query = scope.get("query_string", b"").decode("latin-1")
    state.requests.append(
        RecordedRequest(scope["method"], scope["path"], query, headers, body, parsed)
    )


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _from_headers(injection: Injection, headers: Mapping[str, str]) -> None:
    injection.status = _int(headers.get("x-fake-fail"))
    injection.retry_after = headers.get("x-fake-retry-after")
    injection.delay_ms = float(_int(headers.get("x-fake-delay-ms")) or 0)
    injection.cut_after = _int(headers.get("x-fake-cut-after"))
    injection.reset = headers.get("x-fake-reset", "0") not in ("", "0", "false")


def _from_model(injection: Injection, model: object) -> None:
    if not isinstance(model, str) or ("-" not in model and model != "reset"):
        return
    kind, _, arg = model.partition("-")
    if kind == "fail" and injection.status is None:
        injection.status = _int(arg)
    elif kind == "slow" and not injection.delay_ms:
        injection.delay_ms = float(_int(arg) or 0)
    elif kind == "cut" and injection.cut_after is None:
        injection.cut_after = _int(arg)
    elif kind == "reset":
        injection.reset = True


def _from_error_rate(injection: Injection, state: FakeStateBase, model: object) -> None:
    rate = state.model_error_rate.get(model) if isinstance(model, str) else None
    if rate is None or injection.status is not None:
        return
    assert isinstance(model, str)
    calls = state.model_calls[model] = state.model_calls.get(model, 0) + 1
    if int(calls * rate + 1e-9) > int((calls - 1) * rate + 1e-9):
        injection.status = state.model_error_status.get(model, 500)


def resolve_injection(state: FakeStateBase, request: Request, data: dict[str, Any]) -> Injection:
    injection = Injection()
    if any(key.startswith(b"x-fake-") for key, _ in request.scope["headers"]):
        _from_headers(injection, request.headers)
    _from_model(injection, data.get("model"))
    _from_error_rate(injection, state, data.get("model"))
    if state.failures:
        failure = state.failures.popleft()
        injection.status = failure.status
        injection.retry_after = None if failure.retry_after is None else f"{failure.retry_after:g}"
    if injection.status == 429 and injection.retry_after is None:
        injection.retry_after = "1"
    return injection


def error_response(injection: Injection, error_body: ErrorBody) -> Response:
    status = injection.status or 500
    headers = None if injection.retry_after is None else {"retry-after": injection.retry_after}
    return json_response(error_body(status, None), status, headers)


def apply_cut(response: Response, cut_after: int) -> Response:
    if isinstance(response, SSEResponse):
        response.cut_after = cut_after
        return response
    return CutResponse(response)


RawHeaders = list[tuple[bytes, bytes]]


def endpoint(
    state: FakeStateBase,
    handler: Handler,
    error_body: ErrorBody,
    base_headers: Callable[[], RawHeaders],
) -> Endpoint:
    """Wrap a handler with recording, latency and failure injection."""

    async def run(request: Request, body: bytes | None = None) -> Response:
        body = await request.body() if body is None else body
        parsed = parse_json(body)
        if state.record:
            record(state, request, body, parsed)
        call = Call(request, body, parsed)
        injection = resolve_injection(state, request, call.data)
        if state.fail_containing and injection.status is None:
            for text, status in state.fail_containing.items():
                if text.encode() in body:
                    injection.status = status
                    break
        delay = state.latency_ms + injection.delay_ms + sum(
            ms for text, ms in state.delay_containing.items() if text.encode() in body)
        if delay:
            await asyncio.sleep(delay / 1000)
        if injection.status is not None and injection.status >= 400:
            response = error_response(injection, error_body)
        elif injection.reset:
            return DroppedResponse()
        else:
            response = await handler(call)
        response.raw_headers.extend(base_headers())
        if isinstance(response, SSEResponse):
            response.chunk_delay = state.chunk_delay_ms / 1000
        if injection.cut_after is not None:
            return apply_cut(response, injection.cut_after)
        return response

    return run


async def echo(call: Call, state: FakeStateBase) -> Response:
    """Catch-all route: the request back as JSON, for pass-through tests."""
    request = call.request
    body = call.json if call.json is not None else call.body.decode("utf-8", "replace")
    return json_response(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "query_params": dict(request.query_params),
            "body": body,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
    )


async def health(request: Request) -> Response:
    """Readiness probe; not recorded, never fails."""
    return json_response({"status": "ok"})
