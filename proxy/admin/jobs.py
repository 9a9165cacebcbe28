"""Fine-tuning jobs as tuneloop records them (the provider runs them; the CLI reports).

- `POST /admin/jobs` (admin): record a job the provider created; `{"dry_run": true}` checks
  the caller may start one (and that its dataset exists) before anything is uploaded.
- `PATCH` or `POST /admin/jobs/{id}` (admin): status, fine_tuned_model, error, finished_at,
  trained_tokens, training_cost_usd, last_event_id, curves, and `events` (shown events,
  recorded with the last event id).
- `GET /admin/jobs?status=&limit=`, `GET /admin/jobs/{id}`, `GET /admin/jobs/{id}/events`
  (reviewer or admin).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.admin.common import authorize, int_param, json_object, json_response, text_param
from proxy.auth import Role
from storage.datasets import get_dataset
from storage.finetune_jobs import get_job, list_jobs, record_job
from storage.job_events import apply_job_update, job_events
from tuneloop.errors import BadRequest

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,127}")
STATUS = re.compile(r"[a-z_]{1,32}")
MAX_EVENTS = 10_000


def _job_id(value: Any, param: str = "id") -> str:
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise BadRequest(f"{param} must be a provider job id ([A-Za-z0-9:._-], 1-128)",
                         param=param)
    return value


def _text(body: dict[str, Any], key: str, *, required: bool = False,
          max_length: int = 256) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > max_length \
            or not value.isprintable():
        raise BadRequest(f"{key} must be a string of 1-{max_length} printable characters",
                         param=key)
    return value


def _status(body: dict[str, Any], required: bool) -> str | None:
    status = _text(body, "status", required=required, max_length=32)
    if status is not None and not STATUS.fullmatch(status):
        raise BadRequest("status must be a provider status such as running or succeeded",
                         param="status")
    return status


def _object(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is not None and not isinstance(value, dict):
        raise BadRequest(f"{key} must be a JSON object", param=key)
    return value


async def create(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    body = await json_object(request)
    dataset_id = _text(body, "dataset_id", max_length=64)
    if body.get("dry_run") is True:
        def check(con: Any) -> None:
            if dataset_id is not None:
                get_dataset(con, dataset_id)
        await ctx.db.read(check)
        return json_response({"ok": True, "dry_run": True})
    job_id = _job_id(body.get("id"))
    fields: dict[str, Any] = {
        "provider": _text(body, "provider", required=True, max_length=64),
        "base_model": _text(body, "base_model", required=True),
        "method": _text(body, "method", required=True, max_length=32),
        "status": _status(body, required=True),
        "spec": _object(body, "spec"),
    }

    def run(con: Any) -> dict[str, Any]:
        if dataset_id is not None:
            get_dataset(con, dataset_id)
        return record_job(con, job_id=job_id, dataset_id=dataset_id, **fields)

    return json_response(await ctx.db.write(run), 201)


def _finished_at(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise BadRequest("finished_at is epoch seconds or an ISO 8601 time", param="finished_at")


def _amount(value: Any, key: str, *, integer: bool) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or (integer and not isinstance(value, int)) or not 0 <= value < 2**53:
        raise BadRequest(f"{key} must be a number >= 0 or null", param=key)
    return value


def _events(body: dict[str, Any]) -> list[dict[str, Any]]:
    events = body.get("events") or []
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise BadRequest(f"events must be a list of at most {MAX_EVENTS} events", param="events")
    for event in events:
        if not isinstance(event, dict):
            raise BadRequest("each event is an object", param="events")
        _job_id(event.get("id"), "events[].id")
        if not isinstance(event.get("data", {}), dict | None):
            raise BadRequest("an event's data is an object", param="events")
    return events


async def update(request: Request) -> Response:
    ctx = authorize(request, Role.ADMIN)
    job_id = _job_id(request.path_params["job_id"])
    body = await json_object(request)
    unknown = body.keys() - {"status", "fine_tuned_model", "error", "finished_at",
                             "last_event_id", "curves", "events", "trained_tokens",
                             "training_cost_usd"}
    if unknown:
        raise BadRequest(f"unknown job fields {sorted(unknown)}")
    fields: dict[str, Any] = {}
    if "status" in body:
        fields["status"] = _status(body, required=True)
    if "fine_tuned_model" in body:
        fields["fine_tuned_model"] = _text(body, "fine_tuned_model", max_length=512)
    for key in ("error", "curves"):
        if key in body:
            fields[key] = _object(body, key)
    if "finished_at" in body:
        fields["finished_at"] = _finished_at(body["finished_at"])
    for key in ("trained_tokens", "training_cost_usd"):
        if key in body:
            fields[key] = _amount(body[key], key, integer=key == "trained_tokens")
    if "last_event_id" in body:
        fields["last_event_id"] = body["last_event_id"] and _job_id(body["last_event_id"],
                                                                    "last_event_id")
    events = _events(body)
    job = await ctx.db.write(lambda con: apply_job_update(con, job_id, fields, events))
    return json_response(job)


async def list_all(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    status = text_param(request.query_params, "status", 32)
    limit = int_param(request.query_params, "limit", default=50, low=1, high=1000) or 50
    return json_response({"jobs": await ctx.db.read(lambda con: list_jobs(con, status, limit))})


async def one(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    job_id = _job_id(request.path_params["job_id"])
    return json_response(await ctx.db.read(lambda con: get_job(con, job_id)))


async def events(request: Request) -> Response:
    ctx = authorize(request, Role.REVIEWER)
    job_id = _job_id(request.path_params["job_id"])
    after = int_param(request.query_params, "after", default=0, low=0) or 0
    limit = int_param(request.query_params, "limit", default=1000, low=1, high=5000) or 1000
    found = await ctx.db.read(lambda con: job_events(con, job_id, after=after, limit=limit))
    return json_response({"events": found})


ROUTES = [
    Route("/admin/jobs", list_all, methods=["GET"]),
    Route("/admin/jobs", create, methods=["POST"]),
    Route("/admin/jobs/{job_id}", one, methods=["GET"]),
    Route("/admin/jobs/{job_id}", update, methods=["PATCH", "POST"]),
    Route("/admin/jobs/{job_id}/events", events, methods=["GET"]),
]
