"""The events of fine-tuning jobs as they were shown, and job updates that carry them.

`tuneloop jobs follow` records each event once it has shown it, together with the job's
`last_event_id`, in one transaction, so a later follow (another process, after a dropped
connection or a Ctrl+C) resumes right after it and the Jobs page can list the events without
reaching the provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from storage.batch import insert_rows
from storage.db import Connection
from storage.finetune_jobs import get_job, update_job
from storage.transaction import transaction

MAX_EVENTS_PAGE = 5000
_SCHEMA = pa.schema([
    ("job_id", pa.string()), ("event_id", pa.string()), ("seq", pa.int64()),
    ("created_at", pa.timestamp("us", tz="UTC")), ("level", pa.string()),
    ("message", pa.string()), ("type", pa.string()), ("data", pa.string()),
])


def _time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _append_events(con: Connection, job_id: str, events: Sequence[Mapping[str, Any]]) -> None:
    known = {r[0] for r in con.execute(
        "SELECT event_id FROM finetune_job_events WHERE job_id = ? AND event_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [job_id, [e["id"] for e in events]]).fetchall()}
    start = con.execute("SELECT coalesce(max(seq), 0) FROM finetune_job_events WHERE job_id = ?",
                        [job_id]).fetchall()[0][0]
    rows: list[dict[str, Any]] = []
    seen = set(known)
    for event in events:
        if event["id"] in seen:
            continue  # shown before: recording it again changes nothing
        seen.add(event["id"])
        rows.append({
            "job_id": job_id, "event_id": event["id"], "seq": start + len(rows) + 1,
            "created_at": _time(event.get("created_at")), "level": event.get("level"),
            "message": event.get("message"), "type": event.get("type"),
            "data": orjson.dumps(event.get("data") or {}).decode(),
        })
    insert_rows(con, "finetune_job_events", rows, _SCHEMA)


def apply_job_update(con: Connection, job_id: str, fields: Mapping[str, Any],
                     events: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Record shown events (the last becomes `last_event_id`) and field changes atomically."""
    with transaction(con):
        get_job(con, job_id)  # NotFound before anything is written
        changes = dict(fields)
        if events:
            _append_events(con, job_id, events)
            changes.setdefault("last_event_id", events[-1]["id"])
        return update_job(con, job_id, **changes)


def job_events(con: Connection, job_id: str, *, after: int = 0,
               limit: int = 1000) -> list[dict[str, Any]]:
    """Recorded events, oldest first, after the `seq` given."""
    get_job(con, job_id)
    rows = con.execute(
        "SELECT seq, event_id, created_at, level, message, type, data FROM finetune_job_events "
        "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        [job_id, after, max(1, min(limit, MAX_EVENTS_PAGE))]).fetchall()
    return [{"seq": seq, "id": event_id,
             "created_at": created.isoformat() if created else None, "level": level,
             "message": message, "type": kind, "data": orjson.loads(data) if data else {}}
            for seq, event_id, created, level, message, kind, data in rows]
