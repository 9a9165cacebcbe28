"""The limits on a request body, in one place: its size, how long it may take to arrive, and
how deep its JSON may nest. Everything here runs before anything is forwarded.

The depth check does not recurse and does not walk the parsed object: it works on the bytes
(C-speed `count`, `translate`, one regex and a cumulative sum), because orjson accepts nesting
far deeper than it can write back (it refuses to serialize beyond 254 levels), and a stored
request that cannot be written back breaks every reader of it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.types import Receive

from tuneloop.config import Settings
from tuneloop.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

# every byte but the five that make JSON structure (translate deletes them all at once)
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_PARENS = bytes.maketrans(b"[{]}", b"(())")
_LONG_RUN = 1 << 16


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    idle_timeout_s: float
    """Longest pause between two pieces of the body."""
    total_timeout_s: float | None
    """Longest time for the whole body (None: only the pause limit)."""

    @classmethod
    def logged(cls, settings: Settings) -> BodyLimits:
        return cls(settings.max_body_bytes, settings.body_idle_timeout_s,
                   settings.body_timeout_s)

    @classmethod
    def passthrough(cls, settings: Settings) -> BodyLimits:
        return cls(settings.max_passthrough_bytes, settings.body_idle_timeout_s,
                   settings.passthrough_body_timeout_s)


def check_encoding(headers: Mapping[str, str]) -> None:
    """A compressed body can be neither checked (size, depth) nor logged, and relaying it
    without its `Content-Encoding` would hand the upstream bytes it can't read: refuse it."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"request bodies with Content-Encoding {encoding[:40]!r} are not accepted: send "
            "the body uncompressed")


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


async def read_body(receive: Receive, headers: Mapping[str, str], limits: BodyLimits) -> bytes:
    """The whole request body from the ASGI channel, within the size and time limits.

    One timer covers the whole read: it is pushed forward after each piece (the pause limit)
    but never past the total limit. A body that is already complete costs one timer handle.
    """
    check_encoding(headers)
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large(limits.max_bytes)
    loop = asyncio.get_running_loop()
    now = loop.time()
    end = now + limits.total_timeout_s if limits.total_timeout_s is not None else math.inf
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(min(now + limits.idle_timeout_s, end)) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BadRequest("the client disconnected while sending the body",
                                     code="client_disconnected")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limits.max_bytes:
                    raise too_large(limits.max_bytes)
                parts.append(chunk)
                if not message.get("more_body", False):
                    break
                timer.reschedule(min(loop.time() + limits.idle_timeout_s, end))
    except TimeoutError as exc:
        raise RequestTimeout(
            "the request body did not arrive in time (at most "
            f"{limits.idle_timeout_s:g} s between pieces"
            + ("" if limits.total_timeout_s is None else
               f", {limits.total_timeout_s:g} s in all") + ")"
        ) from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


class BodyReader:
    """A body read piece by piece within `limits` (passthrough uploads, relayed as they
    arrive): the pause limit applies to each piece, the size and total limits to the whole.
    The first error is kept in `error` (the upstream client that pulls the pieces reports its
    own failure; the handler answers this one)."""

    def __init__(self, receive: Receive, headers: Mapping[str, str], limits: BodyLimits):
        check_encoding(headers)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
            raise too_large(limits.max_bytes)
        self.receive = receive
        self.max_bytes = limits.max_bytes
        self.limits = limits
        loop = asyncio.get_running_loop()
        self.end = (loop.time() + limits.total_timeout_s if limits.total_timeout_s is not None
                    else math.inf)
        self.size = 0
        self.done = False
        self.error: Exception | None = None

    async def next(self) -> bytes:
        """The next piece (b"" once `done`)."""
        if self.done:
            return b""
        loop = asyncio.get_running_loop()
        limits = self.limits
        try:
            async with asyncio.timeout_at(min(loop.time() + limits.idle_timeout_s, self.end)):
                message = await self.receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client disconnected while sending the body",
                                 code="client_disconnected")
            chunk: bytes = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
        except TimeoutError as exc:
            self.error = RequestTimeout(
                "the request body did not arrive in time (at most "
                f"{limits.idle_timeout_s:g} s between pieces"
                + ("" if limits.total_timeout_s is None else
                   f", {limits.total_timeout_s:g} s in all") + ")")
            raise self.error from exc
        except Exception as exc:
            self.error = exc
            raise
        self.done = not message.get("more_body", False)
        return chunk

    async def rest(self, first: bytes = b"") -> AsyncIterator[bytes]:
        """`first`, then every piece still to come."""
        if first:
            yield first
        while not self.done:
            chunk = await self.next()
            if chunk:
                yield chunk


async def read_request_body(request: Request, limit: int, settings: Settings) -> bytes:
    """`read_body` for Starlette handlers (admin API and other non-hot paths)."""
    limits = BodyLimits(limit, settings.body_idle_timeout_s, None)
    return await read_body(request.receive, request.headers, limits)


def within_depth(body: bytes, limit: int) -> bool:
    """Whether JSON `body` nests at most `limit` arrays/objects deep (exact for valid JSON;
    for invalid JSON it says yes and orjson says why not).

    One `translate` keeps the quotes and brackets; a body with at most `limit` opening brackets
    in all (most requests) is answered there. Otherwise escapes are dropped and strings removed
    (bracket-free strings in one `replace`), leaving the brackets alone; then each pass of
    `replace("()", "")` takes one level off, so at most `limit` passes decide. A very long run
    of brackets is measured in one pass instead (a running sum in numpy).
    """
    reduced = body.translate(None, _NOT_STRUCTURE)
    if reduced.count(b"[") + reduced.count(b"{") <= limit:
        return True
    if b"\\" in body:
        unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
        reduced = unescaped.translate(None, _NOT_STRUCTURE)
    brackets = reduced.replace(b'""', b"")  # strings without brackets in them
    if b'"' in brackets:  # some string holds brackets: drop every string's inside
        brackets = b"".join(reduced.split(b'"')[::2])
    if len(brackets) > _LONG_RUN:
        steps = np.frombuffer(brackets.translate(_STEPS), dtype=np.int8)
        return int(steps.cumsum(dtype=np.int32).max()) <= limit
    levels = brackets.translate(_PARENS)
    for _ in range(limit):
        fewer = levels.replace(b"()", b"")
        if len(fewer) == len(levels):  # done, or unbalanced (not JSON)
            return True
        levels = fewer
    return not levels


def too_deep(limit: int) -> BadRequest:
    return BadRequest(f"the JSON body nests deeper than {limit} levels", code="json_too_deep")


def parse_payload(body: bytes, max_depth: int) -> dict[str, Any]:
    """The JSON object of a logged endpoint's body: not too deep, valid, and an object."""
    if not within_depth(body, max_depth):
        raise too_deep(max_depth)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            code="invalid_json",
        ) from exc
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return payload


SPACE = b" \t\r\n"
BOM = b"\xef\xbb\xbf"


def looks_like_json(body: bytes) -> bool:
    """Whether a body starts like a JSON object or array (after a BOM and whitespace)."""
    start = body[:4096].removeprefix(BOM).lstrip(SPACE)[:1]
    return start in (b"{", b"[")


def is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower().startswith("multipart/")


def check_json_depth(body: bytes, content_type: str, max_depth: int) -> None:
    """Passthrough bodies: whatever the Content-Type says (a JSON parser upstream may not look
    at it), a body that starts like JSON and nests deeper than the limit is refused; multipart
    uploads (the files API) and other bodies pass as they are (the upstream judges them)."""
    if (body and not is_multipart(content_type) and looks_like_json(body)
            and not within_depth(body, max_depth)):
        raise too_deep(max_depth)
