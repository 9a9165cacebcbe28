"""Keys the proxy issues to apps: POST/GET /admin/keys, DELETE /admin/keys/{id}, POST
/admin/keys/{id}/rotate (admin). Each key's rows digest (`client_key`, as the proxy computes it
from the presented key: proxy/background_opinion.py `key_of`) is recorded when it is issued,
so that a rotation can give the successor its predecessor's stratum (storage/keys.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, json_object, json_response
from proxy.auth import Role
from storage.keys import create_key, key_hashes, list_keys, new_plaintext, revoke_key, rotate_key
from tuneloop.errors import BadRequest


async def create(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise BadRequest("name is a string of 1-128 characters", param="name")
    relay = body.get("feedback_relay", False)
    if not isinstance(relay, bool):
        raise BadRequest("feedback_relay is true or false", param="feedback_relay")
    plaintext = new_plaintext()
    digest = ctx.opinions.key_of(plaintext)
    created = await ctx.db.write(lambda con: create_key(con, name, relay, plaintext, digest))
    await ctx.keys.reload(lambda: ctx.db.read(key_hashes))
    return json_response(created, 201)


async def rotate(request: Request) -> Response:
    """The key's successor, the old key revoked now or after `grace_hours`; the successor's
    requests count in the old key's stratum in a canary (storage/keys.py `rotate_key`)."""
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    grace = body.get("grace_hours", 0)
    if isinstance(grace, bool) or not isinstance(grace, int | float):
        raise BadRequest("grace_hours is a number of hours (0: revoked now)",
                         param="grace_hours")
    key_id = request.path_params["key_id"]
    plaintext = new_plaintext()
    digest = ctx.opinions.key_of(plaintext)
    rotated = await ctx.db.write(
        lambda con: rotate_key(con, key_id, plaintext, digest, float(grace)))
    await ctx.keys.reload(lambda: ctx.db.read(key_hashes))
    return json_response(rotated, 201)


async def listing(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    return json_response({"items": await ctx.db.read(list_keys)})


async def revoke(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    key_id = request.path_params["key_id"]
    await ctx.db.write(lambda con: revoke_key(con, key_id))
    await ctx.keys.reload(lambda: ctx.db.read(key_hashes))
    return json_response({"id": key_id, "revoked": True})


ROUTES = [
    Route("/admin/keys", create, methods=["POST"]),
    Route("/admin/keys", listing, methods=["GET"]),
    Route("/admin/keys/{key_id}", revoke, methods=["DELETE"]),
    Route("/admin/keys/{key_id}/rotate", rotate, methods=["POST"]),
]
