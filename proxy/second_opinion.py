"""The second opinion of an open canary's other arm (proxy.routing), as `Exchange.forward` asks
it: which attempt follows an answer, the primary's refusal held while the other arm is asked,
and that refusal standing when the second opinion does not answer (in time: the settings'
`second_opinion_timeout_s`, shorter than an upstream's read timeout, since the app would
have had the refusal at once without a canary)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from proxy.capture import Capture
from proxy.reply import UpstreamReply
from proxy.routing import NOT_ASKED_AGAIN, Attempt, next_attempt
from tuneloop.errors import UpstreamTimeout


def following(attempts: tuple[Attempt, ...], number: int, status: int) -> int | None:
    """The attempt to try after attempt `number` answered `status`, or None (it stands): a 5xx
    goes on like a connection error, a 4xx (but the client's own credentials') only to a
    second opinion."""
    if status >= 500:
        return next_attempt(attempts, number, refused=False)
    if status >= 400 and status not in NOT_ASKED_AGAIN:
        return next_attempt(attempts, number, refused=True)
    return None


@dataclass(frozen=True)
class HeldRefusal:
    """The primary's refusal while its second opinion is asked: it stands (and is what the app
    gets) unless the second opinion answers. `route` and `sent_request` are the capture's as
    they were for the primary."""

    reply: UpstreamReply
    route: dict[str, Any] | None
    sent_request: bytes | None

    @classmethod
    def of(cls, reply: UpstreamReply, capture: Capture) -> HeldRefusal:
        return cls(reply, capture.route and dict(capture.route), capture.sent_request)

    def stands(self, capture: Capture, primary: Attempt, second: int | str) -> UpstreamReply:
        """The second opinion did not answer (it refused too, failed or timed out): the
        primary's refusal is the answer, logged as the primary's with `second_opinion_status`
        (storage/route_health.py: no model's error, not judged)."""
        capture.upstream_model, capture.provider = primary.target.model, primary.target.provider
        capture.route = None if self.route is None else {**self.route,
                                                         "second_opinion_status": second}
        capture.sent_request = self.sent_request
        return self.reply

    def answered(self, reply: UpstreamReply, capture: Capture,
                 primary: Attempt) -> UpstreamReply:
        """The second opinion's reply: its answer when it has one, else the held refusal."""
        if reply.status < 400:
            self.reply.release()
            return reply
        reply.release()
        return self.stands(capture, primary, reply.status)


async def awaited(sending: Awaitable[UpstreamReply], held: HeldRefusal | None,
                  limit_s: float) -> UpstreamReply:
    """An attempt's reply; with a refusal held (the attempt is its second opinion), waited for
    at most `limit_s` until the reply starts (then UpstreamTimeout: the refusal stands)."""
    if held is None:
        return await sending
    try:
        return await asyncio.wait_for(sending, limit_s)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"the second opinion did not answer within {limit_s:g} s "
                              "(second_opinion_timeout_s)") from exc
