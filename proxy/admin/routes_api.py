"""GET/PUT /admin/routes (the alias table) and GET /admin/routes/history. A PUT replaces the
whole table; it takes the table version read (`?expect_seq=`, from `GET ?with_seq=true`),
needed (else 428) once the table has history unless `?force=true`, and refuses to change or
delete an alias with an open canary unless forced (storage/route_table_guard.py).

A route is checked against the store when it is set: a `strip_template` transform must name a
frozen template (and is pinned to its version: `support-bot` becomes `support-bot-v3`), and a
target's transforms must agree on chat or legacy completions (proxy.transforms). A target's
`api_key_env` must be set in the proxy's environment; a target at another origin than the
default upstream without one is allowed (a server without auth) with a warning, as each
`x-tuneloop-warning` header of the answer (proxy/upstream_keys.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import (
    authorize,
    bool_param,
    int_param,
    json_body,
    json_response,
    text_param,
)
from proxy.auth import Role
from proxy.context import ProxyContext
from proxy.routing import RouteSpec, parse_route_table
from proxy.upstream_keys import keyless_elsewhere, refuse_unset_keys
from storage.db import Connection
from storage.promotions import open_canary
from storage.prompt_templates import load_template
from storage.route_table_guard import alias_seqs, check_table_write, table_seq
from storage.routes import load_routes, replace_routes, route_history
from tuneloop.errors import NotFound
from tuneloop.prompt_template import PromptTemplate

Templates = dict[str, PromptTemplate]
WARNING_HEADER = "x-tuneloop-warning"
"""One per warning of a PUT (a JSON string): the body is the table, keyed by any alias."""


def route_templates(con: Connection, specs: Mapping[str, RouteSpec]) -> Templates:
    """The templates the routes' `strip_template` transforms name, by the name they use (an
    unknown one is left out)."""
    found: Templates = {}
    for ref in sorted({ref for spec in specs.values() for ref in spec.template_refs()}):
        try:
            found[ref] = load_template(con, ref)
        except NotFound:
            continue
    return found


def checked_spec(con: Connection, alias: str, spec: RouteSpec) -> tuple[RouteSpec, Templates]:
    """The spec with its templates pinned to the version they name now, and those templates
    (by `name-vN`); BadRequest when a transform cannot work."""
    templates = route_templates(con, {alias: spec})
    spec.check(alias, templates)
    if not templates:
        return spec, {}

    def pinned(target: Any) -> Any:
        transforms = [t.model_copy(update={"template": templates[t.template].ref})
                      if t.type == "strip_template" else t for t in target.transforms or ()]
        return target.model_copy(update={"transforms": transforms or None})

    spec = spec.model_copy(update={"targets": [pinned(t) for t in spec.targets],
                                   "fallbacks": [pinned(t) for t in spec.fallbacks]})
    return spec, {t.ref: t for t in templates.values()}


def read_router_table(con: Connection
                      ) -> tuple[dict[str, RouteSpec], Templates, dict[str, str]]:
    """The route table, the templates it names and each alias's open canary model."""
    table = parse_route_table(load_routes(con))
    canaries = {alias: episode.model for alias in table
                if (episode := open_canary(con, alias)) is not None}
    return table, route_templates(con, table), canaries


async def reload_routes(ctx: ProxyContext) -> None:
    await ctx.router.reload(lambda: ctx.db.read(read_router_table))


async def get_routes(request: Request) -> Response:
    """The table; `?with_seq=true`: `{"routes", "seq" (the table version, for PUT's
    `expect_seq`), "seqs" (each alias's latest history seq)}`, read together."""
    ctx = authorize(request, Role.REVIEWER)
    if not bool_param(request.query_params, "with_seq"):
        return json_response(await ctx.db.read(load_routes))

    def read(con: Connection) -> dict[str, Any]:
        seq = table_seq(con)  # before the table: a write in between makes it stale, only
        return {"routes": load_routes(con), "seq": seq, "seqs": alias_seqs(con)}

    return json_response(await ctx.db.read(read))


async def put_routes(request: Request) -> Response:
    """`?expect_seq=N` (the table version read) and `?force=true`: storage/route_table_guard.py
    """
    ctx = authorize(request, Role.ADMIN)
    expect_seq = int_param(request.query_params, "expect_seq", low=0)
    force = bool(bool_param(request.query_params, "force"))
    table = parse_route_table(await json_body(request))
    for alias, spec in table.items():
        refuse_unset_keys(ctx.settings, [t.api_key_env for t in [*spec.targets, *spec.fallbacks]],
                          f"route {alias!r}")
    actor = request.headers.get("x-tuneloop-actor", "admin")[:128]

    def write(con: Connection) -> dict[str, RouteSpec]:
        checked = {alias: checked_spec(con, alias, spec)[0] for alias, spec in table.items()}
        specs = {a: s.model_dump(exclude_none=True) for a, s in checked.items()}
        replace_routes(con, specs, actor,
                       lambda current: check_table_write(con, current, specs, expect_seq,
                                                         force))
        return checked

    checked = await ctx.db.write(write)
    await reload_routes(ctx)  # with each alias's open canary (storage/promotions.py)
    response = json_response({a: s.model_dump(exclude_none=True) for a, s in checked.items()})
    for alias, spec in checked.items():  # beside the table: an alias may be any name
        for warning in keyless_elsewhere(ctx.settings, alias, spec):
            response.headers.append(WARNING_HEADER, json.dumps(warning))
    return response


async def get_history(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    alias = text_param(request.query_params, "alias")
    return json_response({"items": await ctx.db.read(lambda con: route_history(con, alias))})


ROUTES = [
    Route("/admin/routes", get_routes, methods=["GET"]),
    Route("/admin/routes", put_routes, methods=["PUT"]),
    Route("/admin/routes/history", get_history, methods=["GET"]),
]
