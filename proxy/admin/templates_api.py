"""Prompt templates (tuneloop/prompt_template.py): found in traffic, frozen, read.

- `GET /admin/template-candidates?alias=A&limit=2000&threshold=0.8` (reviewer): the prompt
  parts the newest `limit` production requests to `alias` (an alias or a model name) share,
  as candidate templates with their share and token counts (tuneloop/prompt_discovery.py);
- `POST /admin/templates` (admin): `{name, parts, alias?, share?, tokens?, sample_size?}`
  freezes the next version of `name` (201);
- `GET /admin/templates?alias=` (reviewer): every frozen version; `GET /admin/templates/{ref}`
  (reviewer): one, by `name-vN` or `name` (the newest).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import (
    authorize,
    float_param,
    int_param,
    json_object,
    json_response,
    text_param,
)
from proxy.auth import Role
from storage.prompt_templates import freeze_template, get_template, list_templates, recent_requests
from tuneloop.errors import BadRequest
from tuneloop.prompt_discovery import (
    DEFAULT_SAMPLE,
    DEFAULT_THRESHOLD,
    MAX_SAMPLE,
    check_threshold,
    discover,
    sample_of,
    token_counter,
)


def _analyse(
    rows: list[tuple[str, Any, str | None]], alias: str, threshold: float
) -> dict[str, Any]:
    """CPU work (JSON already parsed; matching, tokens): run off the event loop."""
    samples = [s for endpoint, request, _ in rows if (s := sample_of(endpoint, request))]
    tokenizer_model = next((m for _, _, m in rows if m), alias)
    found = discover(samples, token_counter(tokenizer_model), threshold)
    return {"alias": alias, "tokenizer_model": tokenizer_model, **found}


async def candidates(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    params = request.query_params
    alias = text_param(params, "alias")
    if alias is None:
        raise BadRequest("alias is required (an alias or a model name)", param="alias")
    limit = int_param(params, "limit", default=DEFAULT_SAMPLE, low=1, high=MAX_SAMPLE)
    assert limit is not None
    threshold = float_param(params, "threshold")
    threshold = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    rows = await ctx.db.read(lambda con: recent_requests(con, alias, limit))
    return json_response(await asyncio.to_thread(_analyse, rows, alias, threshold))


async def freeze(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    actor = request.headers.get("x-tuneloop-actor", "admin")[:128]
    return json_response(await ctx.db.write(lambda con: freeze_template(con, body, actor)), 201)


async def list_all(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    alias = text_param(request.query_params, "alias")
    return json_response({"items": await ctx.db.read(lambda con: list_templates(con, alias))})


async def get_one(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    ref = request.path_params["ref"]
    return json_response(await ctx.db.read(lambda con: get_template(con, ref)))


ROUTES = [
    Route("/admin/template-candidates", candidates, methods=["GET"]),
    Route("/admin/templates", list_all, methods=["GET"]),
    Route("/admin/templates", freeze, methods=["POST"]),
    Route("/admin/templates/{ref}", get_one, methods=["GET"]),
]
