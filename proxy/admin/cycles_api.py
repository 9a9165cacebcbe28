"""The scheduled cycle's state, kept by the proxy for `tuneloop cycle` (admin token to write):

- `POST /admin/cycle-leases/{cycle}` `{holder, ttl_s}`: take or renew the lease (409 while
  another holder's is live); `DELETE /admin/cycle-leases/{cycle}?holder=`: release it;
- `POST /admin/cycle-runs` `{cycle, holder, first_step, config}`: a new run (409 while one is
  active); `POST /admin/cycle-runs/{id}/steps`: record a step (the lease holder only);
- `GET /admin/cycle-runs?cycle=&status=&limit=`, `GET /admin/cycle-runs/{id}` (with steps).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, int_param, json_object, json_response, text_param
from proxy.auth import Role
from storage.cycles import (
    RUN_STATUSES,
    acquire_lease,
    create_run,
    get_run,
    list_runs,
    record_step,
    release_lease,
)
from tuneloop.errors import BadRequest


async def take_lease(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    cycle = request.path_params["cycle"]
    ttl = body.get("ttl_s", 600)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise BadRequest("ttl_s must be a number of seconds", param="ttl_s")
    holder = body.get("holder")
    if not isinstance(holder, str):
        raise BadRequest("holder must be a string", param="holder")
    return json_response(await ctx.db.write(
        lambda con: acquire_lease(con, cycle, holder, float(ttl))))


async def drop_lease(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    cycle = request.path_params["cycle"]
    holder = text_param(request.query_params, "holder")
    if holder is None:
        raise BadRequest("holder is required", param="holder")
    released = await ctx.db.write(lambda con: release_lease(con, cycle, holder))
    return json_response({"cycle": cycle, "released": released})


async def new_run(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    return json_response(await ctx.db.write(lambda con: create_run(con, body)), 201)


async def add_step(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    run_id = request.path_params["run_id"]
    return json_response(await ctx.db.write(lambda con: record_step(con, run_id, body)))


async def runs(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    params = request.query_params
    status = text_param(params, "status")
    if status is not None and status not in RUN_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(RUN_STATUSES)}", param="status")
    cycle = text_param(params, "cycle")
    limit = int_param(params, "limit", default=50, low=1, high=1000) or 50
    items = await ctx.db.read(lambda con: list_runs(con, cycle, status, limit))
    return json_response({"items": items})


async def run(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    run_id = request.path_params["run_id"]
    return json_response(await ctx.db.read(lambda con: get_run(con, run_id)))


ROUTES = [
    Route("/admin/cycle-leases/{cycle}", take_lease, methods=["POST"]),
    Route("/admin/cycle-leases/{cycle}", drop_lease, methods=["DELETE"]),
    Route("/admin/cycle-runs", new_run, methods=["POST"]),
    Route("/admin/cycle-runs", runs, methods=["GET"]),
    Route("/admin/cycle-runs/{run_id}", run, methods=["GET"]),
    Route("/admin/cycle-runs/{run_id}/steps", add_step, methods=["POST"]),
]
