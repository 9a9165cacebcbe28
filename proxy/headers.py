"""What crosses the proxy in headers: tuneloop's own client headers, and filtering both ways."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from proxy.header_text import header_text
from tuneloop.errors import BadRequest

TAG_PATTERN = re.compile(r"^[A-Za-z0-9:_.-]{1,64}$")
MAX_TAGS = 32
MAX_ID_LENGTH = 256
TRAFFIC_KINDS = ("production", "evaluation", "synthetic")

# What goes upstream is an allowlist: the headers OpenAI's API documents and its official SDKs
# send (content negotiation, the organization/project/beta selectors, idempotency and request
# ids, the SDK's own `x-stainless-*` telemetry). Everything else a client sends stays here:
# hop-by-hop fields, forwarding claims (X-Forwarded-*, Forwarded, X-Real-IP, Via), URL and
# method overrides (X-Original-URL, X-Rewrite-URL, X-HTTP-Method-Override), cookies, other
# providers' keys, our own x-tuneloop-* headers, and body framing (set by the client library).
# Credentials are added by the caller (`proxy.upstream_keys.upstream_credentials`), never copied.
FORWARDED_UPSTREAM = frozenset(
    {
        "content-type", "accept", "user-agent", "openai-organization", "openai-project",
        "openai-beta", "idempotency-key", "x-client-request-id",
    }
)
FORWARDED_PREFIXES = ("x-stainless-",)
# Not copied back to the client: hop-by-hop and framing (we set content-length), and `date`:
# the proxy's server writes its own on every response (ours included), so the upstream's would
# make two. `server` is relayed (the first one only): the proxy's server sends none (see
# proxy/server.py).
_DROP_DOWNSTREAM = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "trailer", "upgrade",
     "proxy-connection", "date"}
)
_SUPPORTED_ENCODINGS = ("gzip", "deflate", "identity")


@dataclass(frozen=True)
class ClientMeta:
    tags: tuple[str, ...] = ()
    user: str | None = None
    session: str | None = None
    no_log: bool = False
    traffic: str = "production"
    source: str | None = None
    """The interaction this request was made from (evaluation replays a logged prompt), so that
    forgetting a user reaches the copies too."""

    @property
    def sticky_key(self) -> str | None:
        return self.user or self.session


def _bounded(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{name} is longer than {MAX_ID_LENGTH} characters", param=name)
    return value


def client_meta(headers: Mapping[str, str]) -> ClientMeta:
    raw_tags = header_text(headers, "x-tuneloop-tags") or ""
    tags = tuple(t.strip() for t in raw_tags.split(",") if t.strip())
    for tag in tags:
        if not TAG_PATTERN.match(tag):
            raise BadRequest(
                f"invalid tag {tag[:80]!r} in x-tuneloop-tags: each tag is 1-64 characters "
                "of A-Z a-z 0-9 : _ . -",
                param="x-tuneloop-tags",
            )
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"at most {MAX_TAGS} tags", param="x-tuneloop-tags")
    traffic = headers.get("x-tuneloop-traffic", "production").strip().lower()
    if traffic not in TRAFFIC_KINDS:
        raise BadRequest(f"x-tuneloop-traffic must be one of {', '.join(TRAFFIC_KINDS)}",
                         param="x-tuneloop-traffic")
    return ClientMeta(
        tags=tuple(dict.fromkeys(tags)),
        user=_bounded(header_text(headers, "x-tuneloop-user"), "x-tuneloop-user"),
        session=_bounded(header_text(headers, "x-tuneloop-session"), "x-tuneloop-session"),
        no_log=headers.get("x-tuneloop-no-log", "").strip().lower() in ("1", "true", "yes"),
        traffic=traffic,
        source=_bounded(headers.get("x-tuneloop-source"), "x-tuneloop-source"),
    )


def with_body_user(meta: ClientMeta, payload: Mapping[str, object]) -> ClientMeta:
    """The user id from OpenAI's `user` body field when no `x-tuneloop-user` header names one
    (the header wins). The field stays in the body: OpenAI defines it, so it is forwarded.
    A value that is not a usable id (not text, blank, overlong, a NUL) is ignored, not
    refused: the request is valid for OpenAI."""
    user = payload.get("user")
    if meta.user is not None or not isinstance(user, str):
        return meta
    user = user.strip()
    if not user or len(user) > MAX_ID_LENGTH or "\x00" in user:
        return meta
    return replace(meta, user=user)


def upstream_headers(headers: Mapping[str, str],
                     extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """The client's headers that may go upstream (`FORWARDED_UPSTREAM` and the operator's
    `extra`, minus any the client's own Connection header names as hop-by-hop), and the
    encodings the proxy can decode; credentials are added by the caller."""
    nominated = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if ((name in FORWARDED_UPSTREAM or name.startswith(FORWARDED_PREFIXES)
             or name in extra) and name not in nominated):
            out[name] = value
    accepted = [
        enc.strip() for enc in headers.get("accept-encoding", "").split(",")
        if enc.split(";")[0].strip().lower() in _SUPPORTED_ENCODINGS
    ]
    out["accept-encoding"] = ", ".join(accepted) or "identity"
    return out


def downstream_headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers for the client: hop-by-hop, framing and `date`
    dropped, and one `server` at most (the first)."""
    out: list[tuple[bytes, bytes]] = []
    server = False
    for name, value in pairs:
        lower = name.lower()
        if lower in _DROP_DOWNSTREAM:
            continue
        if lower == "server":
            if server:
                continue
            server = True
        out.append((lower.encode("latin-1"), value.encode("latin-1")))
    return out
