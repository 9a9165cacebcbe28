"""Fine-tuning jobs as tuneloop knows them: which dataset and base model, the provider's state,
the last event shown (so `tuneloop jobs follow` resumes after it), the result model, and the
loss curves from the result file.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from storage.db import Connection
from tuneloop.errors import Conflict, NotFound

_MUTABLE = ("status", "fine_tuned_model", "error", "last_event_id", "curves", "finished_at",
            "trained_tokens", "training_cost_usd")
_JSON = ("spec", "error", "curves")
_COLUMNS = (
    "id",
    "provider",
    "dataset_id",
    "base_model",
    "method",
    "status",
    "fine_tuned_model",
    "spec",
    "error",
    "last_event_id",
    "curves",
    "created_at",
    "updated_at",
    "finished_at",
    "trained_tokens",
    "training_cost_usd",
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def record_job(
    con: Connection,
    *,
    job_id: str,
    provider: str,
    base_model: str,
    method: str,
    status: str,
    dataset_id: str | None = None,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A job the provider just created."""
    now = datetime.now(UTC)
    if con.execute("SELECT 1 FROM finetune_jobs WHERE id = ?", [job_id]).fetchall():
        raise Conflict(f"job {job_id} is already recorded")
    con.execute(
        "INSERT INTO finetune_jobs (id, provider, dataset_id, base_model, method, status, spec, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [job_id, provider, dataset_id, base_model, method, status, _json(spec), now, now],
    )
    return get_job(con, job_id)


def update_job(con: Connection, job_id: str, **fields: Any) -> dict[str, Any]:
    """Change what the provider reported (status, fine_tuned_model, error, finished_at,
    trained_tokens and their cost), the last event shown, or the loss curves."""
    unknown = set(fields) - set(_MUTABLE)
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if fields:
        names = sorted(fields)
        values = [_json(fields[n]) if n in _JSON else fields[n] for n in names]
        assignments = ", ".join(f"{name} = ?" for name in names)
        rows = con.execute(
            f"UPDATE finetune_jobs SET {assignments}, updated_at = ? WHERE id = ? RETURNING id",
            [*values, datetime.now(UTC), job_id],
        ).fetchall()
        if not rows:
            raise NotFound(f"no job {job_id}")
    return get_job(con, job_id)


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    job = dict(zip(_COLUMNS, row, strict=True))
    for name in _JSON:
        job[name] = orjson.loads(job[name]) if job[name] is not None else None
    for name in ("created_at", "updated_at", "finished_at"):
        job[name] = job[name].isoformat() if job[name] is not None else None
    return job


def get_job(con: Connection, job_id: str) -> dict[str, Any]:
    rows = con.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM finetune_jobs WHERE id = ?", [job_id]
    ).fetchall()
    if not rows:
        raise NotFound(f"no job {job_id}")
    return _row(rows[0])


def list_jobs(con: Connection, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(_COLUMNS)} FROM finetune_jobs"
    params: list[Any] = []
    if status is not None:
        sql += " WHERE status = ?"
        params.append(status)
    sql += " ORDER BY created_at DESC, id LIMIT ?"
    params.append(limit)
    return [_row(row) for row in con.execute(sql, params).fetchall()]
