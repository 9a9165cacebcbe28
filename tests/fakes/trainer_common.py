"""What the fake Together and Fireworks fine-tuning APIs share: RFC 3339 times, a job that
advances one step each time it is read (so a test's polling drives it without sleeping), and
routes that all need the state's bearer key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.routing import Route

from .common import Call, ErrorBody, FakeStateBase, RawHeaders, endpoint

S = TypeVar("S", bound=FakeStateBase)
J = TypeVar("J")
Handler = Callable[[Call, Any], Awaitable[Response]]


def stamp() -> str:
    """Now, as these APIs write times: `2024-05-17T17:35:45.123456Z`."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def read_job(job: J | Response, finished: bool, tick: Callable[[J], None]) -> J | Response:
    """A job being read (polled): one step further unless it has `finished`."""
    if not isinstance(job, Response) and not finished:
        tick(job)
    return job


def keyed_routes(state: S, table: Sequence[tuple[str, Handler, list[str]]],
                 error_body: ErrorBody, refuse: Callable[[Call, S], Response | None]
                 ) -> list[Route]:
    """Routes of `table` (path, handler, methods), each refused by `refuse` (a wrong key,
    another account: a response) or handled with the state."""

    def headers() -> RawHeaders:
        return []

    def guarded(handler: Handler) -> Callable[[Call], Awaitable[Response]]:
        async def run(call: Call) -> Response:
            refused = refuse(call, state)
            return refused if refused is not None else await handler(call, state)

        return run

    return [Route(path, endpoint(state, guarded(handler), error_body, headers), methods=methods)
            for path, handler, methods in table]
