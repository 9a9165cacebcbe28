"""POST /admin/faults: the documented fault-injection switch for reliability tests.

Only mounted when `fault_injection` is on (TUNELOOP_FAULT_INJECTION=1); off by default. A root
process ignores file modes, so "the database can't be written for 10 s" is simulated here.
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
    seconds = body.get("storage_fail_seconds")
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
        raise BadRequest("storage_fail_seconds is a number from 0 to 3600")
    ctx.writer.inject_failure(float(seconds))
    return json_response({"storage_fail_seconds": seconds})


ROUTES = [Route("/admin/faults", inject, methods=["POST"])]
