"""Evaluation runs: a validation set run through a candidate and a baseline model (client-side,
through the proxy, as evaluation traffic tagged `eval:<run id>`), and the report.

The run is created before the first request (its id tags the traffic) and finished with the
report: per-model scores, the margin, and the examples whose answers differ.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import orjson

from storage.db import Connection
from tuneloop.errors import BadRequest, Conflict, NotFound

STATUSES = ("running", "done", "failed")
_COLUMNS = ("id", "status", "dataset", "candidate", "baseline", "scorer", "threshold",
            "candidate_score", "baseline_score", "margin", "report", "error", "cycle_run_id",
            "created_at", "finished_at", "created_by")


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 1024:
        raise BadRequest(f"{name} must be a string of 1-1024 characters", param=name)
    return value


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number", param=name)
    return float(value)


def create_eval_run(con: Connection, body: dict[str, Any], by: str | None) -> dict[str, Any]:
    run_id = "ev_" + secrets.token_hex(8)
    con.execute(
        "INSERT INTO eval_runs (id, status, dataset, candidate, baseline, scorer, threshold, "
        "cycle_run_id, created_at, created_by) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, _text(body, "dataset", required=False), _text(body, "candidate"),
         _text(body, "baseline"), _text(body, "scorer"),
         _number(body.get("threshold"), "threshold"),
         _text(body, "cycle_run_id", required=False), datetime.now(UTC), by])
    return get_eval_run(con, run_id)


def finish_eval_run(con: Connection, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Record the outcome: `status` done (with `report`) or failed (with `error`)."""
    status = body.get("status")
    if status not in ("done", "failed"):
        raise BadRequest("status must be done or failed", param="status")
    given = body.get("report")
    if given is not None and not isinstance(given, dict):
        raise BadRequest("report must be a JSON object", param="report")
    report: dict[str, Any] = given or {}
    models = report.get("models")
    models = models if isinstance(models, dict) else {}
    scores = {role: _number((models.get(role) or {}).get("score"), f"{role} score")
              for role in ("candidate", "baseline")}
    current = get_eval_run(con, run_id)
    if current["status"] != "running":
        raise Conflict(f"evaluation {run_id} is already {current['status']}")
    con.execute(
        "UPDATE eval_runs SET status = ?, report = ?, error = ?, candidate_score = ?, "
        "baseline_score = ?, margin = ?, finished_at = ? WHERE id = ?",
        [status, orjson.dumps(report).decode() if report else None,
         _text(body, "error", required=False), scores["candidate"], scores["baseline"],
         _number(report.get("margin"), "margin"), datetime.now(UTC), run_id])
    return get_eval_run(con, run_id)


def _row(row: tuple[Any, ...], with_report: bool) -> dict[str, Any]:
    run = dict(zip(_COLUMNS, row, strict=True))
    run["report"] = orjson.loads(run["report"]) if with_report and run["report"] else None
    if not with_report:
        del run["report"]
    for name in ("created_at", "finished_at"):
        run[name] = run[name].isoformat() if run[name] is not None else None
    return run


def get_eval_run(con: Connection, run_id: str) -> dict[str, Any]:
    rows = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM eval_runs WHERE id = ?",
                       [run_id]).fetchall()
    if not rows:
        raise NotFound(f"no evaluation run {run_id}")
    return _row(rows[0], True)


def list_eval_runs(con: Connection, limit: int = 50,
                   cycle_run_id: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE cycle_run_id = ?", [cycle_run_id]) if cycle_run_id else ("", [])
    rows = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM eval_runs {where} "
                       "ORDER BY created_at DESC, id LIMIT ?", [*params, limit]).fetchall()
    return [_row(row, False) for row in rows]
