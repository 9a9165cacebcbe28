"""Shared pieces of the admin API: auth, parameter parsing, JSON in and out.

Every admin body is read by `json_body` (the snapshot header of POST /admin/datasets by
`parse_admin_json`): at most `settings.max_json_depth` levels of JSON (default 64), else 400
`json_too_deep`, the hot path's check (proxy.body) reused; and no NUL character (U+0000,
`\\u0000` in JSON) anywhere in it, else 400 `nul_character`: Postgres text can't hold one
(DuckDB's can, and such a row then stops `migrate-store`), and Postgres can't read any part
of a JSON value holding one. The URL of every admin request is checked alike
(`nul_in_url`, from proxy.app before routing), so no path or query parameter reaches storage
with one either. Stored rows are answered one by one
(`row_json`): a row that cannot be written as JSON becomes a placeholder, logged, and the rest
of the answer is served.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from proxy.auth import Role
from proxy.body import read_request_body, too_deep, within_depth
from proxy.context import ProxyContext, context_of
from storage.interactions import MAX_PAGE, InteractionFilter
from tuneloop.errors import BadRequest

ADMIN_BODY_LIMIT = 16 * 1024 * 1024
UNREADABLE = "unreadable stored value"
ADMIN_PREFIX = "/admin/"
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""`\\u0000` in JSON text: an escape, not an escaped backslash followed by `u0000`."""
log = logging.getLogger("tuneloop.admin")


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code, media_type="application/json")


def authorize(request: Request, role: Role) -> ProxyContext:
    ctx = context_of(request)
    ctx.admin.require(request.headers, role)
    return ctx


def row_json(row: dict[str, Any]) -> orjson.Fragment:
    """One stored row (an interaction as reviewers see it) as JSON on its own, to embed in an
    answer. A row orjson cannot write (nesting past its 254 levels, integers beyond 64 bits)
    becomes `{"id", "error": "unreadable stored value"}` and is logged: one bad row never
    fails a whole listing."""
    return orjson.Fragment(row_bytes(row))


def row_bytes(row: dict[str, Any]) -> bytes:
    """`row_json`'s text."""
    try:
        return orjson.dumps(row)
    except TypeError as exc:  # orjson.JSONEncodeError
        log.error("interaction %r: its stored value cannot be written as JSON (%s); answered "
                  "as a placeholder", row.get("id"), exc)
        return orjson.dumps({"id": row.get("id"), "error": UNREADABLE})


def nul_refused(what: str) -> BadRequest:
    return BadRequest(f"{what} holds a NUL character (U+0000), which tuneloop does not "
                      "store: remove it", code="nul_character")


def refuse_nul(body: bytes, what: str) -> None:
    """400 when the JSON text `body` holds an escaped NUL (a raw one is invalid JSON)."""
    if b"\\u0000" in body and _ESCAPED_NUL.search(body):
        raise nul_refused(what)


def nul_in_url(scope: Scope) -> BadRequest | None:
    """The error for an admin request whose path, query or headers hold a NUL character, else
    None (HTTP servers refuse a NUL in a header already: this holds behind any of them)."""
    if "\x00" in scope["path"]:
        return nul_refused("the URL path")
    query = scope.get("query_string", b"").decode("latin-1")
    if any("\x00" in k or "\x00" in v for k, v in parse_qsl(query, keep_blank_values=True)):
        return nul_refused("the query string")
    if any(b"\x00" in value for _, value in scope.get("headers", ())):  # x-tuneloop-actor
        return nul_refused("a header")
    return None


def parse_admin_json(body: bytes, max_depth: int, what: str = "the request body") -> Any:
    """JSON text of an admin body: not deeper than `max_depth`, without NUL, valid."""
    if not within_depth(body, max_depth):
        raise too_deep(max_depth)
    refuse_nul(body, what)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON", code="invalid_json") from exc


async def json_body(request: Request) -> Any:
    settings = context_of(request).settings
    body = await read_request_body(request, ADMIN_BODY_LIMIT, settings)
    return parse_admin_json(body, settings.max_json_depth)


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return body


def refuse_repeated(params: QueryParams, names: tuple[str, ...]) -> None:
    """400 when a parameter that takes one value is given more than once (`?q=a&q=b`): which
    one would count is the server's guess, so neither is taken."""
    repeated = sorted({name for name in names if len(params.getlist(name)) > 1})
    if repeated:
        raise BadRequest(f"{', '.join(repeated)} given more than once; each takes one value",
                         param=repeated[0])


def one_value(params: QueryParams, name: str) -> str | None:
    """The value of a parameter that takes one; 400 when it is given more than once, the same
    on every endpoint (review r12x2 LOW 4: `since` twice was taken as the last by one and
    refused by another)."""
    values = params.getlist(name)
    if len(values) > 1:
        refuse_repeated(params, (name,))
    return values[0] if values else None


def int_param(params: QueryParams, name: str, *, default: int | None = None,
              low: int | None = None, high: int | None = None) -> int | None:
    raw = one_value(params, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer", param=name) from exc
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"{name} must be between {low} and {high}", param=name)
    return value


def float_param(params: QueryParams, name: str) -> float | None:
    raw = one_value(params, name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number", param=name) from exc
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest(f"{name} must be a finite number", param=name)
    return value


def bool_param(params: QueryParams, name: str) -> bool | None:
    raw = one_value(params, name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name} must be true or false", param=name)


def time_param(params: QueryParams, name: str) -> datetime | None:
    raw = one_value(params, name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{name} must be an ISO 8601 time", param=name) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def text_param(params: QueryParams, name: str, max_length: int = 512) -> str | None:
    raw = one_value(params, name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise BadRequest(f"{name} is too long (at most {max_length} characters)", param=name)
    if "\x00" in raw:
        raise BadRequest(f"{name} contains a NUL character", param=name)
    if "\ufffd" in raw:  # what the query string's invalid UTF-8 was decoded to
        raise BadRequest(f"{name} is not valid UTF-8 text", param=name)
    return raw


def interaction_filter(params: QueryParams) -> InteractionFilter:
    return InteractionFilter(
        model=text_param(params, "model"),
        status_code=int_param(params, "status_code", low=100, high=599),
        tag=text_param(params, "tag"),
        user=text_param(params, "user"),
        session=text_param(params, "session"),
        since=time_param(params, "since"),
        until=time_param(params, "until"),
        traffic=text_param(params, "traffic"),
        endpoint=text_param(params, "endpoint"),
        has_error=bool_param(params, "has_error"),
    )


def page_params(params: QueryParams) -> tuple[int, str | None]:
    limit = int_param(params, "limit", default=50, low=1, high=MAX_PAGE)
    assert limit is not None
    return limit, text_param(params, "cursor", max_length=64)
