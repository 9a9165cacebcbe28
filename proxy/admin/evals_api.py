"""Evaluation runs (the evaluation itself runs client-side, through the proxy):

- `POST /admin/evals` (admin): `{candidate, baseline, scorer, dataset?, threshold?,
  cycle_run_id?}` → the run, whose id tags the evaluation traffic (`eval:<id>`);
- `POST /admin/evals/{id}/report` (admin): `{status: done|failed, report?, error?}`;
- `GET /admin/evals?limit=&cycle_run_id=`, `GET /admin/evals/{id}` (with the report).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, int_param, json_object, json_response, text_param
from proxy.auth import Role
from storage.eval_runs import create_eval_run, finish_eval_run, get_eval_run, list_eval_runs


def _actor(request: Request) -> str:
    return request.headers.get("x-tuneloop-actor", "admin")[:128]


async def create(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    run = await ctx.db.write(lambda con: create_eval_run(con, body, _actor(request)))
    return json_response(run, 201)


async def report(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    run_id = request.path_params["run_id"]
    return json_response(await ctx.db.write(lambda con: finish_eval_run(con, run_id, body)))


async def list_runs(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    limit = int_param(request.query_params, "limit", default=50, low=1, high=1000) or 50
    cycle_run_id = text_param(request.query_params, "cycle_run_id")
    items = await ctx.db.read(lambda con: list_eval_runs(con, limit, cycle_run_id))
    return json_response({"items": items})


async def get_run(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    run_id = request.path_params["run_id"]
    return json_response(await ctx.db.read(lambda con: get_eval_run(con, run_id)))


ROUTES = [
    Route("/admin/evals", create, methods=["POST"]),
    Route("/admin/evals", list_runs, methods=["GET"]),
    Route("/admin/evals/{run_id}", get_run, methods=["GET"]),
    Route("/admin/evals/{run_id}/report", report, methods=["POST"]),
]
