"""While a canary is open on an alias, its answers do not say which arm gave them.

A client that knows which arm answered can steer the canary's statistics: send the requests
only the canary refuses as the users that landed on it, or flood one arm with cheap successes
(r14e #4). So an answer to a request that named an alias with an open canary is *covered*:
its `model` (the JSON answer's, every streamed event's, a Responses event's `response.model`)
is the alias, its `system_fingerprint` is gone, a target's model name in an error message is
the alias, and of the upstream's headers only a canonical `content-type` is kept (rate limit
headers, request ids, `server`, timings differ per model and per provider); the proxy's own
error for an upstream that failed names no host or provider. Both arms alike,
and the route's fallbacks too. The store keeps what the upstream really said (the capture sees
the upstream's bytes, the client these).

A covered request asks the upstream for `identity`; an upstream that compresses anyway is
decoded (gzip, deflate) and the answer goes out uncompressed; one it cannot read is refused
(`check`) rather than relayed unread. A stream is rewritten event by event: bytes are held
until their event's blank line arrives (an event split anywhere across reads), events keep
their order, comments and other fields, and `data: [DONE]`; an unterminated event at the end
is dropped, as an SSE client would drop it. Requests that named a model, and aliases without
an open canary, never reach this module: their bytes are relayed as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from proxy.assemble import EventSplitter
from proxy.reply import UpstreamReply
from proxy.routing import Plan
from tuneloop.errors import TuneloopError, UpstreamTimeout, UpstreamUnreachable

READABLE = frozenset({"", "identity", "gzip", "deflate"})
JSON_TYPE = b"application/json"
SSE_TYPE = b"text/event-stream; charset=utf-8"


class ArmCover:
    """The cover of one request's answer: the alias it named and the models it may hide."""

    def __init__(self, alias: str, models: Iterable[str]):
        self.alias = alias
        self._alias_bytes = alias.encode()
        # longest first: a name inside another (gpt-4o in gpt-4o-mini) is not split
        self._names = sorted({m for m in models if m != alias}, key=len, reverse=True)

    @classmethod
    def of(cls, plan: Plan) -> ArmCover | None:
        """The cover a plan needs: only an alias with an open canary has one."""
        if not plan.covered or plan.alias is None or plan.spec is None:
            return None
        spec = plan.spec
        return cls(plan.alias, [t.model for t in [*spec.targets, *spec.fallbacks]])

    # -- the request --------------------------------------------------------------------------
    @staticmethod
    def asked(headers: Mapping[str, str]) -> dict[str, str]:
        """The client's headers as the upstream should see them: asking for no compression
        (the answer is rewritten; identity is always acceptable to the client)."""
        return {**headers, "accept-encoding": "identity"}

    def check(self, reply: UpstreamReply) -> UpstreamReply:
        """The reply if its body can be read; else it is released and refused."""
        if reply.content_encoding in READABLE:
            return reply
        reply.release()
        raise UpstreamUnreachable(
            f"the upstream answered in an encoding the proxy cannot read "
            f"({reply.content_encoding[:40]!r})", code="upstream_encoding")

    # -- the answer ---------------------------------------------------------------------------
    def headers(self, content_type: str, stream: bool) -> list[tuple[bytes, bytes]]:
        """The response's headers: one canonical content type, nothing of the upstream's."""
        if stream:
            return [(b"content-type", SSE_TYPE)]
        if content_type.split(";")[0].strip().lower() == "application/json":
            return [(b"content-type", JSON_TYPE)]
        return [(b"content-type", content_type.encode("latin-1"))] if content_type else []

    def answer(self, decoded: bytes, parsed: Any) -> bytes:
        """A plain answer's body (`decoded`: its bytes uncompressed, `parsed`: as JSON)."""
        if isinstance(parsed, dict):
            return orjson.dumps(self.covered(parsed))
        return self.scrub(decoded)

    def events(self, encoding: str) -> CoveredEvents:
        return CoveredEvents(self, encoding)

    def covered(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A copy of one answer object (or streamed event) that does not name the arm."""
        out = dict(payload)
        if "model" in out:
            out["model"] = self.alias
        out.pop("system_fingerprint", None)
        if isinstance(out.get("response"), dict):  # the Responses API's events
            out["response"] = self.covered(out["response"])
        if isinstance(out.get("message"), str):  # a Responses `error` event
            out["message"] = self.named(out["message"])
        error = out.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            out["error"] = {**error, "message": self.named(error["message"])}
        return out

    def proxy_error(self, exc: TuneloopError) -> dict[str, Any]:
        """The proxy's own error answer: an upstream's failure without the host or provider
        that failed (the arms may live apart; the store keeps the full message)."""
        if isinstance(exc, UpstreamTimeout):
            return type(exc)("the upstream did not answer in time", code=exc.code).to_openai()
        if isinstance(exc, UpstreamUnreachable):
            return type(exc)("the upstream could not be reached or failed the request",
                             code=exc.code).to_openai()
        return self.covered(exc.to_openai())

    def named(self, text: str) -> str:
        for name in self._names:
            text = text.replace(name, self.alias)
        return text

    def scrub(self, raw: bytes) -> bytes:
        """Bytes that are not a JSON object, with the targets' names replaced."""
        for name in self._names:
            raw = raw.replace(name.encode(), self._alias_bytes)
        return raw


class CoveredEvents:
    """A server-sent event stream rewritten event by event (see the module's docstring)."""

    def __init__(self, cover: ArmCover, encoding: str):
        self._cover = cover
        self._events = EventSplitter(encoding)

    def feed(self, chunk: bytes) -> bytes:
        """The covered bytes of every event that `chunk` completes (b"" when none)."""
        return b"".join([self._event(raw) for raw in self._events.feed(chunk)])

    def _event(self, raw: bytes) -> bytes:
        if raw.startswith(b"data: {") and b"\n" not in raw:  # the usual event: one JSON line
            try:
                payload = orjson.loads(raw[6:])
            except orjson.JSONDecodeError:
                payload = None
            if isinstance(payload, dict):
                return b"data: " + orjson.dumps(self._cover.covered(payload)) + b"\n\n"
        lines = raw.split(b"\n")
        data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
        try:
            payload = orjson.loads(b"\n".join(data)) if data else None
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):  # a comment, `[DONE]`, text: names scrubbed
            return self._cover.scrub(raw) + b"\n\n"
        covered = b"data: " + orjson.dumps(self._cover.covered(payload))
        kept: list[bytes] = []
        for line in lines:  # the data lines become one, where the first one was
            if not line.startswith(b"data:"):
                kept.append(line)
            elif covered:
                kept.append(covered)
                covered = b""
        return b"\n".join(kept) + b"\n\n"
