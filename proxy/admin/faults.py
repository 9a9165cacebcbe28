"""POST /admin/faults: the documented fault-injection switch for reliability tests.

Only mounted when `fault_injection` is on (TUNELOOP_FAULT_INJECTION=1); off by default. A root
process ignores file modes, so "the database can't be written for 10 s" is simulated here
(`storage_fail_seconds`); `search_index_pause_seconds` stops the background search indexer
for a while (the index then lags, as under a heavy load).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, json_object, json_response
from proxy.auth import Role
from tuneloop.errors import BadRequest


async def inject(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    known = {"storage_fail_seconds": ctx.writer.inject_failure,
             "search_index_pause_seconds": ctx.indexer.pause}
    given = {key: body[key] for key in known if key in body}
    if not given or body.keys() - known.keys():
        raise BadRequest(f"give one or more of {', '.join(known)} (and nothing else)")
    for key, seconds in given.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not 0 <= seconds <= 3600:
            raise BadRequest(f"{key} is a number from 0 to 3600")
    for key, seconds in given.items():
        known[key](float(seconds))
    return json_response(given)


ROUTES = [Route("/admin/faults", inject, methods=["POST"])]
