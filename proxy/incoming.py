"""The parts of an incoming ASGI request the proxy forwards, read once from the scope, the
one rule for the path that goes upstream, and whether the client is still there.

The upstream's origin comes from settings and routes only. The path appended to it is built
from the decoded path the router matched (never the raw one), checked segment by segment and
quoted again, so nothing a client sends can change where a request goes: dot segments (also
written `%2e`), encoded slashes and backslashes (`%2f`, `%5c`), empty segments, and `@`, `%`,
`\\`, `?`, `#`, `;` (matrix parameters: Tomcat and Spring read `..;` as `..`), control or
non-ASCII characters after decoding (full-width dots `%EF%BC%8E` become `..` under NFKC; OpenAI's
ids are ASCII) are refused with a 400 before anything is sent. A space is percent-encoded again.

The query string is not a path: it is checked to hold only RFC 3986 characters and appended
after the first `?`, which the checked path cannot contain, so `?/../../admin` stays a query
(no upstream applies dot-segment removal to a query; nothing there is refused for it).
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from starlette.types import Message, Receive, Scope

from tuneloop.errors import BadRequest

API_PREFIX = "/v1"
# after decoding, a segment holds printable ASCII or spaces, but not "@" (userinfo tricks),
# "%" (double encoding), "\\", "?", "#" or ";" (matrix parameters); spaces are quoted again
_SEGMENT = re.compile(r"[^@%\\?#;\x00-\x1f\x7f-\U0010ffff]+")
_SAFE = "/-._~!$&'()*+,;=:"
# encoded "/", "\" and NUL in the raw path: a decoded path can't tell them from the real thing
_RAW_FORBIDDEN = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)
_QUERY = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")


def _refused(why: str) -> BadRequest:
    return BadRequest(f"the request path is not allowed: {why}", code="invalid_path")


def upstream_path(scope: Scope) -> str:
    """The path after `/v1`, with its query string, to append to an upstream base URL."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or b""
    if _RAW_FORBIDDEN.search(raw):
        raise _refused("encoded slashes, backslashes and NUL are refused")
    if not path.startswith(API_PREFIX + "/"):
        raise _refused(f"it must start with {API_PREFIX}/")
    rest = path[len(API_PREFIX):]
    segments = rest[1:].split("/")
    if segments[-1] == "":
        segments.pop()  # one trailing slash is harmless
    for segment in segments:
        if segment in (".", ".."):
            raise _refused("dot segments are refused")
        if not _SEGMENT.fullmatch(segment):
            raise _refused("empty segments, non-ASCII, and @ % \\ ? # ; or control characters "
                           "are refused")
    query: bytes = scope.get("query_string") or b""
    if not _QUERY.fullmatch(query):
        raise _refused("the query string holds characters outside RFC 3986")
    suffix = quote(rest, safe=_SAFE)
    return f"{suffix}?{query.decode('ascii')}" if query else suffix


def plain_path(scope: Scope, path: str) -> bool:
    """Whether the request was sent as `path` itself, with nothing percent-encoded (the logged
    endpoints: anything else goes through `upstream_path`'s checks)."""
    raw = scope.get("raw_path")
    return raw is None or raw == path.encode()


@dataclass(slots=True)
class Incoming:
    method: str
    suffix: str
    """What goes after the upstream base URL: see `upstream_path`."""
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""

    @classmethod
    def from_scope(cls, scope: Scope, suffix: str | None = None) -> Incoming:
        return cls(
            method=scope["method"],
            suffix=upstream_path(scope) if suffix is None else suffix,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        )


def client_gone(receive: Receive) -> bool:
    """Whether the client has hung up, asked without waiting.

    Once the body is read, the server's `receive()` returns `http.disconnect` at once if the
    client is gone, and otherwise waits; its first step is taken here and, if it would wait,
    the call is dropped (the same question Starlette's `Request.is_disconnected` asks with a
    cancelled scope, without a task or a scope).
    """
    step = cast(Coroutine[Any, Any, Message], receive())
    try:
        step.send(None)
    except StopIteration as done:
        return bool(done.value.get("type") == "http.disconnect")
    step.close()
    return False
