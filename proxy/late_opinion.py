"""What an `Exchange` hands to the background (proxy/background_opinion.py) while its alias
has an open canary: a second opinion cut by `second_opinion_timeout_s` or by the client's
hang-up (it goes on), and a hang-up before the answer's first byte reached the client (the
other arm is asked the same request, as its second opinion would be: the same body,
transforms and credentials, proxy/forward.py; its answer due within W, the time since the
drawn arm was asked).

A hang-up after the first byte is not probed (the client may know the arm by then); nor one
sooner than `hangup_probe_min_s` after the drawn arm was asked (an instant cancel costs
nothing), nor one when `background_opinions_max` are in flight, or the request's client key
has its share (`background_opinions_per_key`) and no more is free: those rows say `late_opinion`
`too_quick` / `budget_full` / `key_share_full` and are unjudged."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from proxy.background_opinion import LATE_OPINION, PROBE_TRAFFIC, TOO_QUICK, answer_bound_s
from proxy.capture import Capture
from proxy.context import ProxyContext
from proxy.forward import Outgoing, body_for, send_attempt, timeouts_for
from proxy.ids import uuid7
from proxy.reply import UpstreamReply
from proxy.routing import Plan
from proxy.second_opinion import Failover


def other_arm(plan: Plan) -> int | None:
    """The number of the plan's second opinion (the open canary's other arm), or None."""
    return next((n for n, a in enumerate(plan.attempts) if a.role == "second_opinion"), None)


def probe_capture(primary: Capture, plan: Plan, number: int, outgoing: Outgoing,
                  started: float, deadline_s: float | None, key: str) -> Capture:
    """The row of a background opinion: traffic `probe`, `source_id` the judged request's id,
    the app's request (and what the other arm received, when its transforms changed it);
    `key`: the judged request's client key (its record's, for the indexer's lanes)."""
    attempt = plan.attempts[number]
    route: dict[str, Any] = {**attempt.describe(), "attempt": number,
                             "primary": plan.attempts[0].target.model, "draw": plan.draw}
    if deadline_s is not None:
        route["deadline_s"] = round(deadline_s, 3)
    meta = dataclasses.replace(primary.meta, traffic=PROBE_TRAFFIC, tags=(),
                               source=primary.interaction_id)
    return Capture(uuid7(), primary.endpoint, meta, primary.request_body, primary.payload,
                   primary.stream, started=started, upstream_model=attempt.target.model,
                   provider=attempt.target.provider, route=route,
                   sent_request=outgoing.body if outgoing.transformed else None,
                   client_key=key)


def go_on_later(ctx: ProxyContext, failover: Failover, key: str, number: int,
                outgoing: Outgoing, began: float, task: asyncio.Task[UpstreamReply]) -> None:
    """Second opinion `number`, cut by `second_opinion_timeout_s` or by the client's hang-up,
    goes on in the background and judges the request's row (or is cancelled: no row to judge,
    or the budget is full; `failover.late` says which). `key`: the client key (its share of
    the budget)."""
    capture = failover.capture
    if capture.meta.no_log:
        task.cancel()
        return
    probe = probe_capture(capture, failover.plan, number, outgoing, began, None, key)
    timeouts = timeouts_for(ctx, failover.plan.attempts[number])
    failover.late = ctx.opinions.take(probe, task, None, key,
                                      answer_bound_s(timeouts.connect_s, timeouts.read_s))


def probe_after_hangup(ctx: ProxyContext, plan: Plan, primary: Capture,
                       asked: Mapping[str, str], suffix: str, waited_s: float,
                       key: str) -> None:
    """The client hung up `waited_s` after the drawn arm was asked (not after its request
    began: a body sent slowly gives the other arm no longer than the drawn arm had): when that
    was before its answer's first byte, on the drawn arm (no second opinion asked yet), the
    other arm is asked in the background and the route's `late_opinion` says so (or why
    not)."""
    route, number = primary.route, other_arm(plan)
    if (route is None or number is None or primary.ttfb_ms is not None
            or route.get("attempt") != 0 or "second_opinion_status" in route
            or LATE_OPINION in route):
        return
    opinions = ctx.opinions
    if waited_s < ctx.settings.hangup_probe_min_s:
        route[LATE_OPINION] = opinions.skip(TOO_QUICK)
        return
    attempt = plan.attempts[number]
    outgoing = body_for(attempt, primary.endpoint, primary.request_body, primary.payload)
    probe = probe_capture(primary, plan, number, outgoing, time.perf_counter(), waited_s, key)
    sending = send_attempt(ctx, attempt, primary.endpoint, asked, suffix, outgoing.body,
                           outgoing.payload, timeouts_for(ctx, attempt))
    route.update(opinions.take(probe, sending, waited_s, key))
