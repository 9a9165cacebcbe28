"""OpenAI-shaped errors and cursor pages shared by the fake OpenAI routes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from starlette.responses import Response

from .common import json_response

_DEFAULTS: Mapping[int, tuple[str, str | None, str]] = MappingProxyType(
    {
        400: ("invalid_request_error", None, "Invalid request (fake upstream)."),
        401: (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided (fake upstream).",
        ),
        403: (
            "permission_error",
            "unsupported_country_region_territory",
            "Forbidden (fake upstream).",
        ),
        404: ("invalid_request_error", "not_found", "Not found (fake upstream)."),
        408: ("timeout", None, "Request timed out (fake upstream)."),
        409: ("invalid_request_error", "conflict", "Conflict (fake upstream)."),
        429: (
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests (fake upstream).",
        ),
    }
)
_SERVER = (
    "server_error",
    "server_error",
    "The server had an error while processing your request (fake upstream).",
)


def openai_error_body(
    status: int, message: str | None, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind, default_code, default_message = _DEFAULTS.get(status, _SERVER)
    error = {
        "message": message or default_message,
        "type": kind,
        "param": param,
        "code": code or default_code,
    }
    return {"error": error}


def openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> Response:
    return json_response(openai_error_body(status, message, param=param, code=code), status)


def int_param(value: str | None, default: int, high: int = 10_000) -> int:
    try:
        return max(1, min(high, int(value))) if value is not None else default
    except ValueError:
        return default


def cursor_page(items: Sequence[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """One page of ``items`` (already in listing order) following the item with id ``after``."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = list(items[start : start + limit])
    return {
        "object": "list",
        "data": page,
        "has_more": start + limit < len(items),
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
