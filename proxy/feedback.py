"""POST /v1/feedback: an app's score in [-1, 1] and comment about one interaction.

The app gets the interaction id from the `x-tuneloop-id` header and may send feedback at once,
before the interaction has left the spool; an id that is not in the database yet is waited
for while the spool still holds records, and answered 404 only after that.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response

from proxy.admin.common import json_object, json_response
from proxy.auth import bearer
from proxy.context import ProxyContext, context_of
from proxy.forward import error_response
from storage.feedback import add_feedback, validate_feedback
from storage.interactions import interaction_exists
from storage.route_health import RELAY_MARK
from tuneloop.errors import Conflict, NotFound

INGEST_WAIT_S = 5.0


async def _logged_soon(ctx: ProxyContext, interaction_id: str) -> bool:
    interval = ctx.writer.interval_s
    deadline = time.monotonic() + max(INGEST_WAIT_S, 10 * interval)
    while True:
        # the spool is looked at BEFORE the read: a record leaves it only after its commit, so
        # an empty spool seen first means the read sees every record logged until then (seen
        # after the read, the batch could commit in between and the id answer 404)
        spooled = ctx.writer.spool.size_bytes > 0
        if await ctx.db.read(lambda con: interaction_exists(con, interaction_id)):
            return True
        if not spooled or time.monotonic() > deadline:
            return False
        await asyncio.sleep(min(interval, 0.1))


async def feedback(request: Request) -> Response:
    ctx = context_of(request)
    source = None
    if ctx.settings.issue_keys:
        ctx.keys.check(request.headers)
        key = bearer(request.headers)
        source = key[:7] if key else None  # the key's public prefix, as in api_keys
        if key and ctx.keys.is_relay(key):  # its votes count per end user (route_health)
            source = f"{source}{RELAY_MARK}"
    interaction_id, score, comment = validate_feedback(await json_object(request))
    if comment is not None:
        comment = ctx.redactor.text(comment)
    if not await _logged_soon(ctx, interaction_id):
        raise NotFound(f"no interaction with id {interaction_id!r}")
    limit = ctx.settings.feedback_max_per_key
    try:
        created = await ctx.db.write(lambda con: add_feedback(
            con, interaction_id, score, comment, source, max_per_source=limit))
    except Conflict as exc:
        refused = error_response(exc)
        refused.headers["x-should-retry"] = "false"
        return refused
    return json_response(created, 201)
