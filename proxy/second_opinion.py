"""The second opinion of an open canary's other arm (proxy.routing), as `Exchange.forward` asks
it: which attempt follows an outcome, the primary's failure held while the other arm (then the
fallbacks) is asked, and that failure standing when nobody answers.

A primary failure (4xx, 5xx, timeout, connection error) goes to the other arm; its answer is
the app's, and the row is the primary's error (`route.attempt` > 0). When the second opinion
fails too, the request failed on every model: a refusal stands, a 5xx or timeout goes on to the
fallbacks; the row carries `second_opinion_status` and is judged for neither arm
(storage/route_health.py), whoever finally answers. The app gets the successful answer if any,
else the primary's own failure. The second opinion is waited for at most the settings'
`second_opinion_timeout_s` until its answer starts (the app would have had the failure at once
without a canary); one cut so, or by the client's hang-up, goes on in the background and judges
the row later (proxy/background_opinion.py, `route.late_opinion`). A 401/403 on a key of the
operator's (a route's `api_key_env`, the server's key, a litellm provider's variable) is the
target's failure like any other; on the client's own key (pass-through) it is asked again only
when the other arm would get the very same credentials at the same origin
(proxy/upstream_keys.py `same_credentials`: the app's key goes nowhere it would not go anyway):
its answer makes the refusal the drawn arm's failure, its refusal makes the key bad, nobody's.
Else it stands, unjudged (`route.refused_key` says whose)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.capture import Capture
from proxy.context import ProxyContext
from proxy.reply import UpstreamReply
from proxy.routing import OPENAI_COMPATIBLE, Attempt, Plan, next_attempt
from proxy.upstream_keys import at_default_upstream, same_credentials, upstream_credentials
from tuneloop.errors import TuneloopError, UpstreamTimeout

KEY_REFUSALS = frozenset({401, 403})


def refused_key(ctx: ProxyContext, headers: Mapping[str, str], attempt: Attempt) -> str:
    """Whose key a 401/403 refused: `client` when the credentials that went upstream were the
    client's own (or the client sent none, the proxy not issuing keys), else `operator`."""
    if attempt.target.provider != OPENAI_COMPATIBLE or ctx.settings.issue_keys:
        return "operator"  # litellm uses the route's or the provider's variable
    sent = upstream_credentials(ctx.settings, headers, attempt.target)
    if not sent:  # no key went: the client sent none, or the target is keyless elsewhere
        return "client" if at_default_upstream(ctx.settings, attempt.target) else "operator"
    return "client" if all(headers.get(k) == v for k, v in sent.items()) else "operator"


def shares_key(ctx: ProxyContext, headers: Mapping[str, str], attempts: tuple[Attempt, ...],
               number: int) -> bool:
    """Whether attempt `number`'s second opinion would get the credentials it sent, at the
    same origin (so the client's key it refused can be tried there)."""
    after = number + 1
    return after < len(attempts) and attempts[after].role == "second_opinion" and \
        same_credentials(ctx.settings, headers, attempts[number].target, attempts[after].target)


def following(attempts: tuple[Attempt, ...], number: int, status: int,
              client_key: bool) -> int | None:
    """The attempt to try after attempt `number` answered `status`, or None (it stands): a 5xx
    goes on like a connection error, a 4xx only to a second opinion (`client_key`: a refusal
    of the client's own key the second opinion would not get: it stands)."""
    if status >= 500:
        return next_attempt(attempts, number, refused=False)
    if status >= 400 and not client_key:
        return next_attempt(attempts, number, refused=True)
    return None


@dataclass
class HeldFailure:
    """The primary's failure (a reply of status >= 400, or an error) while the other arm is
    asked; `route` and `sent_request` are the capture's as they were for the primary."""

    reply: UpstreamReply | None
    error: TuneloopError | None
    route: dict[str, Any] | None
    sent_request: bytes | None
    second: int | str | None = None
    """How the second opinion failed (its status, `timeout`, `abandoned`), once it did."""

    @property
    def refusal(self) -> bool:
        """A 4xx: it goes to no fallback (a fallback is for an upstream's failure)."""
        return self.reply is not None and self.reply.status < 500

    def release(self) -> None:
        if self.reply is not None:
            self.reply.release()


Step = int | UpstreamReply
"""The next attempt's number, or the reply that answers the app."""


class Failover:
    """Which attempt of a plan comes next, for `Exchange.forward`."""

    def __init__(self, plan: Plan, capture: Capture):
        self.plan = plan
        self.capture = capture
        self.primary_status: int | None = None
        self.refused_key: str | None = None  # whose key the primary's 401/403 refused
        self.held: HeldFailure | None = None
        self.late: dict[str, object] | None = None
        """The route's `late_opinion` (and `late_due`) once the second opinion went to the
        background."""

    def route(self, number: int) -> dict[str, Any] | None:
        """The row's `route` for attempt `number`."""
        plan = self.plan
        if plan.alias is None:
            return None
        route = {**plan.attempts[number].describe(), "attempt": number,
                 "primary": plan.attempts[0].target.model, "draw": plan.draw}
        if self.primary_status is not None:
            route["primary_status"] = self.primary_status
        if self.refused_key is not None:
            route["refused_key"] = self.refused_key
        if self.held is not None and self.held.second is not None:
            route["second_opinion_status"] = self.held.second
        if self.late is not None:
            route.update(self.late)
        return route

    def bounded(self, number: int) -> bool:
        """Whether attempt `number` is a second opinion (waited for at most
        `second_opinion_timeout_s`)."""
        return self.held is not None and self.plan.attempts[number].role == "second_opinion"

    def answered(self, number: int, reply: UpstreamReply, key: str | None,
                 shared: bool = False) -> Step:
        """After attempt `number` answered (`key`: whose key its 401/403 refused; `shared`:
        its second opinion would get that same key, `shares_key`): the next attempt, or the
        reply that answers the app."""
        attempts = self.plan.attempts
        if number == 0 and key is not None:
            self.refused_key = key
        if reply.status < 400:
            if self.held is not None:
                self.held.release()
            return reply
        if self.held is not None:
            return self._failed_again(number, reply.status, reply)
        after = following(attempts, number, reply.status, key == "client" and not shared)
        if after is None:
            return reply
        if number == 0:
            self.primary_status = reply.status
        if attempts[after].role == "second_opinion":
            self.held = self._hold(reply, None)
        else:
            reply.release()
        return after

    def raised(self, number: int, exc: TuneloopError) -> Step:
        """After attempt `number` raised `exc` (a timeout, a connection error): the next
        attempt, or the failure that stands (`exc`, or the held one: returned or raised)."""
        if self.held is not None:
            how = "timeout" if isinstance(exc, UpstreamTimeout) else "unreachable"
            return self._failed_again(number, how, None)
        after = next_attempt(self.plan.attempts, number, refused=False)
        if after is None:
            raise exc
        if self.plan.attempts[after].role == "second_opinion":
            self.held = self._hold(None, exc)
        return after

    def abandoned(self) -> None:
        """The client hung up while another attempt was asked: the row is the primary's
        failure, judged for nobody (the second opinion never had its chance)."""
        if self.held is not None:
            self.held.second = self.held.second or "abandoned"
            self._restore()
            self.held.release()

    def _hold(self, reply: UpstreamReply | None, error: TuneloopError | None) -> HeldFailure:
        capture = self.capture
        return HeldFailure(reply, error, capture.route and dict(capture.route),
                           capture.sent_request)

    def _failed_again(self, number: int, how: int | str, reply: UpstreamReply | None) -> Step:
        """A second opinion (or a fallback after it) failed too: the next fallback for a 5xx or
        timeout of the primary, else the primary's failure stands."""
        held = self.held
        assert held is not None
        if self.plan.attempts[number].role == "second_opinion":
            held.second = how
        if reply is not None:
            reply.release()
        after = None if held.refusal else next_attempt(self.plan.attempts, number,
                                                       refused=False)
        if after is not None:
            return after
        self._restore()
        if held.reply is not None:
            return held.reply
        assert held.error is not None
        raise held.error

    def _restore(self) -> None:
        """Log the primary's failure as the answer, with `second_opinion_status`."""
        held, capture = self.held, self.capture
        assert held is not None
        primary = self.plan.attempts[0].target
        capture.upstream_model, capture.provider = primary.model, primary.provider
        capture.route = None if held.route is None else {
            **held.route, "second_opinion_status": held.second}
        if capture.route is not None and self.late is not None:
            capture.route.update(self.late)
        capture.sent_request = held.sent_request


Later = Callable[["asyncio.Task[UpstreamReply]"], None]
"""Takes a second opinion cut short: it goes on in the background (or is cancelled)."""


async def awaited(sending: Coroutine[Any, Any, UpstreamReply], later: Later | None,
                  limit_s: float) -> UpstreamReply:
    """An attempt's reply; a second opinion's (`later` given) waited for at most `limit_s`
    until the reply starts (then UpstreamTimeout: the primary's failure stands). A second
    opinion cut so, or by the client's hang-up (the request cancelled), is not cancelled:
    `later` takes it."""
    if later is None:
        return await sending
    task = asyncio.ensure_future(sending)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_s)
    except asyncio.CancelledError:
        later(task)
        raise
    if not done:
        later(task)
        raise UpstreamTimeout(f"the second opinion did not answer within {limit_s:g} s "
                              "(second_opinion_timeout_s)")
    return task.result()
