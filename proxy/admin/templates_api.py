"""Prompt templates (tuneloop/prompt_template.py): found in traffic, frozen, read.

- `GET /admin/template-candidates?alias=A&limit=2000&threshold=0.8&max_bytes=` (reviewer):
  the prompt parts the newest `limit` production requests to `alias` (an alias or a model
  name) share, as candidate templates with their share and token counts
  (tuneloop/prompt_discovery.py), bounded by a byte budget, in a worker process, one at a
  time (tuneloop/discovery_job.py);
- `POST /admin/templates` (admin): `{name, alias, candidate: <id>, limit?, threshold?,
  max_bytes?}` (the candidate shown, if discovery still offers it: 409 if not) or
  `{name, parts, alias?}` freezes the next version of `name` (201); share, tokens and sample
  size are the server's (proxy/admin/template_bodies.py);
- `GET /admin/templates?alias=&limit=&offset=` (reviewer): the frozen versions, a page of at
  most 200 with `next_offset` (null on the last page); `GET /admin/templates/{ref}`
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
from proxy.admin.template_bodies import FreezeBody, parse_freeze_body
from proxy.auth import Role
from proxy.context import ProxyContext
from storage.compute_worker import ComputeWorker
from storage.prompt_templates import (
    freeze_template,
    get_template,
    list_templates,
    request_texts,
    sample_ids,
)
from tuneloop.discovery_job import (
    BATCH_ROWS,
    DEFAULT_SAMPLE_BYTES,
    MAX_REQUEST_BYTES,
    MAX_SAMPLE_BYTES,
    DiscoveryJob,
    analyse,
)
from tuneloop.errors import BadRequest, Conflict, TooManyRequests
from tuneloop.prompt_discovery import (
    DEFAULT_SAMPLE,
    DEFAULT_THRESHOLD,
    MAX_SAMPLE,
    check_threshold,
    part_tokens_of,
    token_counter,
)
from tuneloop.prompt_template import PromptTemplate, check_name

PAGE = 200  # frozen templates per page of `GET /admin/templates`
MIN_MATCHED = 10  # requests a candidate must match to be frozen: not one user's text


async def _read_sample(ctx: ProxyContext, alias: str, limit: int, max_bytes: int,
                       threshold: float) -> DiscoveryJob:
    """The newest requests within the byte budget, read in batches (short reads: writes and
    other reads go between them), as raw JSON text."""
    ids, read = await ctx.db.read(
        lambda con: sample_ids(con, alias, limit, max_bytes, MAX_REQUEST_BYTES))
    rows: list[tuple[str, str, str | None]] = []
    for start in range(0, len(ids), BATCH_ROWS):
        batch = ids[start : start + BATCH_ROWS]
        rows += await ctx.db.read(lambda con, batch=batch: request_texts(con, batch))  # type: ignore[misc]
    read = {**read, "bytes": sum(len(text) for _, text, _ in rows), "max_bytes": max_bytes}
    return DiscoveryJob(alias=alias, threshold=threshold, rows=rows, read=read)


def _in_worker_process(job: DiscoveryJob) -> dict[str, Any]:
    """`analyse` in a process of its own that ends with it, so its memory is given back (on
    failure ComputeWorker runs it here, still within the byte budget)."""
    worker = ComputeWorker(retry_after_s=0.0)
    try:
        return worker.run(analyse, job)
    finally:
        worker.close()


async def _discover(ctx: ProxyContext, alias: str, limit: int, max_bytes: int,
                    threshold: float) -> dict[str, Any]:
    if not ctx.discovery_lock.acquire(blocking=False):
        raise TooManyRequests("a template discovery is already running on this server; try "
                              "again when it has finished")
    try:
        job = await _read_sample(ctx, alias, limit, max_bytes, threshold)
        if ctx.worker is not None:
            return await asyncio.to_thread(_in_worker_process, job)
        return await asyncio.to_thread(analyse, job)
    finally:
        ctx.discovery_lock.release()


async def candidates(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    params = request.query_params
    alias = text_param(params, "alias")
    if alias is None:
        raise BadRequest("alias is required (an alias or a model name)", param="alias")
    limit = int_param(params, "limit", default=DEFAULT_SAMPLE, low=1, high=MAX_SAMPLE)
    max_bytes = int_param(params, "max_bytes", default=DEFAULT_SAMPLE_BYTES, low=1,
                          high=MAX_SAMPLE_BYTES)
    assert limit is not None and max_bytes is not None
    threshold = float_param(params, "threshold")
    threshold = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    return json_response(await _discover(ctx, alias, limit, max_bytes, threshold))


async def _from_candidate(ctx: ProxyContext, body: FreezeBody) -> dict[str, Any]:
    """The candidate discovery offers with `body.candidate` as its id, or Conflict."""
    assert body.alias is not None and body.candidate is not None
    found = await _discover(
        ctx, body.alias, body.limit or DEFAULT_SAMPLE, body.max_bytes or DEFAULT_SAMPLE_BYTES,
        DEFAULT_THRESHOLD if body.threshold is None else body.threshold)
    chosen = next((c for c in found["candidates"] if c["id"] == body.candidate), None)
    if chosen is None:
        offered = ", ".join(c["id"] for c in found["candidates"]) or "none"
        raise Conflict(
            f"candidate {body.candidate} is no longer offered for {body.alias} (the traffic "
            f"changed since it was shown; offered now: {offered}): list the candidates again "
            "and freeze one of those", code="candidate_not_offered")
    if chosen["matched"] < MIN_MATCHED:
        raise Conflict(
            f"candidate {body.candidate} matches {chosen['matched']} requests of {body.alias}; "
            f"a template is frozen from at least {MIN_MATCHED}: text fewer requests share "
            "could be one user's (and `tuneloop forget` leaves templates alone)",
            code="too_few_requests")
    return {"name": body.name, "parts": chosen["parts"], "alias": body.alias,
            "share": chosen["share"], "tokens": chosen["tokens"],
            "sample_size": found["sample"][chosen["kind"]]}


def _from_parts(body: FreezeBody) -> dict[str, Any]:
    """Parts the admin wrote: tokens counted here (the alias's encoding), share unknown."""
    assert body.parts is not None
    parts = body.parts.as_dict()
    template = PromptTemplate.from_dict({**parts, "name": body.name, "version": 1})
    return {"name": body.name, "parts": parts, "alias": body.alias,
            "tokens": sum(part_tokens_of(template, token_counter(body.alias or "")).values())}


async def freeze(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = parse_freeze_body(await json_object(request))
    check_name(body.name)
    actor = request.headers.get("x-tuneloop-actor", "admin")[:128]
    if body.candidate is not None:
        stored = await _from_candidate(ctx, body)
    else:
        stored = await asyncio.to_thread(_from_parts, body)
    return json_response(await ctx.db.write(lambda con: freeze_template(con, stored, actor)), 201)


async def list_all(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    params = request.query_params
    alias = text_param(params, "alias")
    limit = int_param(params, "limit", default=PAGE, low=1, high=PAGE)
    offset = int_param(params, "offset", default=0, low=0, high=2**62)
    assert limit is not None and offset is not None
    items = await ctx.db.read(lambda con: list_templates(con, alias, limit + 1, offset))
    more = len(items) > limit
    return json_response({"items": items[:limit], "next_offset": offset + limit if more else None})


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
