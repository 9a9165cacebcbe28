"""The scheduled cycle's state: runs, their steps, and a lease per cycle.

A run belongs to a named cycle and moves through steps (export, validate, finetune, wait,
evaluate, canary, watch); `step` is the next one to run (NULL once the run is over),
`state` the facts gathered so far (export path, job id, model, eval run, promotion time).
Every step transition is a row in `cycle_steps`. A cycle has at most one active run.

The lease makes concurrent cycles safe: only the holder of a live lease may create a run or
record a step, and the writer thread makes check-then-write atomic. A lease expires unless
renewed, so a crashed cycle never blocks the next one for longer than its time to live.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from storage.backend import upsert_sql
from storage.db import Connection
from tuneloop.errors import BadRequest, Conflict, NotFound

RUN_STATUSES = ("active", "finished", "failed")
STEP_STATUSES = ("started", "done", "waiting", "error", "skipped")
_RUN_COLUMNS = ("id", "cycle", "status", "step", "outcome", "state", "config", "error",
                "created_at", "updated_at", "finished_at")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise BadRequest(f"{what} must be a string of 1-256 characters", param=what)
    return value


def _lease(con: Connection, cycle: str) -> tuple[str, datetime] | None:
    rows = con.execute("SELECT holder, expires_at FROM cycle_leases WHERE cycle = ?",
                       [cycle]).fetchall()
    return (rows[0][0], rows[0][1]) if rows else None


def acquire_lease(con: Connection, cycle: str, holder: str, ttl_s: float) -> dict[str, Any]:
    """Take or renew the cycle's lease; Conflict while another holder's lease is live."""
    _name(cycle, "cycle")
    _name(holder, "holder")
    if not 1 <= ttl_s <= 7 * 86400:
        raise BadRequest("ttl_s must be between 1 second and 7 days", param="ttl_s")
    now = datetime.now(UTC)
    current = _lease(con, cycle)
    if current is not None and current[0] != holder and current[1] > now:
        raise Conflict(f"cycle {cycle!r} is running elsewhere ({current[0]}) until "
                       f"{current[1].isoformat()}", code="lease_held")
    expires = now + timedelta(seconds=ttl_s)
    con.execute(upsert_sql("cycle_leases", ("cycle", "holder", "acquired_at", "expires_at"),
                           "cycle"),
                [cycle, holder, now, expires])
    return {"cycle": cycle, "holder": holder, "expires_at": expires.isoformat()}


def release_lease(con: Connection, cycle: str, holder: str) -> bool:
    rows = con.execute("DELETE FROM cycle_leases WHERE cycle = ? AND holder = ? RETURNING cycle",
                       [cycle, holder]).fetchall()
    return bool(rows)


def _require_lease(con: Connection, cycle: str, holder: Any) -> str:
    holder = _name(holder, "holder")
    current = _lease(con, cycle)
    if current is None or current[0] != holder or current[1] <= datetime.now(UTC):
        raise Conflict(f"{holder} does not hold the lease of cycle {cycle!r}",
                       code="lease_lost")
    return holder


def _run(row: tuple[Any, ...]) -> dict[str, Any]:
    run = dict(zip(_RUN_COLUMNS, row, strict=True))
    run["state"] = orjson.loads(run["state"])
    run["config"] = orjson.loads(run["config"]) if run["config"] else None
    for name in ("created_at", "updated_at", "finished_at"):
        run[name] = run[name].isoformat() if run[name] is not None else None
    return run


def _steps(con: Connection, run_id: str) -> list[dict[str, Any]]:
    rows = con.execute("SELECT seq, step, status, detail, holder, recorded_at FROM cycle_steps "
                       "WHERE run_id = ? ORDER BY seq", [run_id]).fetchall()
    return [{"seq": seq, "step": step, "status": status,
             "detail": orjson.loads(detail) if detail else None, "holder": holder,
             "at": at.isoformat()} for seq, step, status, detail, holder, at in rows]


def get_run(con: Connection, run_id: str) -> dict[str, Any]:
    rows = con.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM cycle_runs WHERE id = ?",
                       [run_id]).fetchall()
    if not rows:
        raise NotFound(f"no cycle run {run_id}")
    return {**_run(rows[0]), "steps": _steps(con, run_id)}


def list_runs(con: Connection, cycle: str | None = None, status: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    clauses, params = [], []
    if cycle is not None:
        clauses.append("cycle = ?")
        params.append(cycle)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    where = " AND ".join(clauses) or "TRUE"
    rows = con.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM cycle_runs WHERE {where} "
                       "ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]).fetchall()
    return [_run(row) for row in rows]


def create_run(con: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """A new active run at `first_step`; Conflict when the cycle already has one."""
    cycle = _name(body.get("cycle"), "cycle")
    holder = _require_lease(con, cycle, body.get("holder"))
    first = _name(body.get("first_step"), "first_step")
    active = list_runs(con, cycle, "active", 1)
    if active:
        raise Conflict(f"cycle {cycle!r} already has an active run {active[0]['id']}",
                       code="run_active")
    run_id = "cy_" + secrets.token_hex(8)
    now = datetime.now(UTC)
    config = body.get("config")
    con.execute("INSERT INTO cycle_runs (id, cycle, status, step, state, config, created_at, "
                "updated_at) VALUES (?, ?, 'active', ?, '{}', ?, ?, ?)",
                [run_id, cycle, first, None if config is None else orjson.dumps(config).decode(),
                 now, now])
    con.execute("INSERT INTO cycle_steps (run_id, step, status, detail, holder, recorded_at) "
                "VALUES (?, 'run', 'started', NULL, ?, ?)", [run_id, holder, now])
    return get_run(con, run_id)


def record_step(con: Connection, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Record a step transition: `{holder, step, status, detail?, state?, next_step?,
    run_status?, outcome?, error?}`. `state` is merged into the run's state; `next_step`
    (null to end) moves the run on; `run_status` finished|failed ends it."""
    run = get_run(con, run_id)
    holder = _require_lease(con, run["cycle"], body.get("holder"))
    if run["status"] != "active":
        raise Conflict(f"cycle run {run_id} is {run['status']}", code="run_over")
    step, status = _name(body.get("step"), "step"), body.get("status")
    if status not in STEP_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STEP_STATUSES)}", param="status")
    patch = body.get("state") or {}
    detail = body.get("detail")
    if not isinstance(patch, dict) or (detail is not None and not isinstance(detail, dict)):
        raise BadRequest("state and detail must be JSON objects")
    run_status = body.get("run_status", "active")
    if run_status not in RUN_STATUSES:
        raise BadRequest(f"run_status must be one of {', '.join(RUN_STATUSES)}")
    next_step = body["next_step"] if "next_step" in body else run["step"]
    if run_status != "active":
        next_step = None
    elif next_step is not None:
        _name(next_step, "next_step")
    for name in ("outcome", "error"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(f"{name} must be a string", param=name)
    now = datetime.now(UTC)
    con.execute("INSERT INTO cycle_steps (run_id, step, status, detail, holder, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, step, status, None if detail is None else orjson.dumps(detail).decode(),
                 holder, now])
    con.execute("UPDATE cycle_runs SET state = ?, step = ?, status = ?, outcome = ?, error = ?, "
                "updated_at = ?, finished_at = ? WHERE id = ?",
                [orjson.dumps({**run["state"], **patch}).decode(), next_step, run_status,
                 body.get("outcome", run["outcome"]), body.get("error", run["error"]), now,
                 now if run_status != "active" else None, run_id])
    return get_run(con, run_id)
