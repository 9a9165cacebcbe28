"""The route table (alias → targets) and its history. Specs are JSON validated by the proxy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from storage.backend import upsert_sql
from storage.db import Connection
from storage.notify import ROUTES, notify
from storage.transaction import transaction
from tuneloop.errors import NotFound


def load_routes(con: Connection) -> dict[str, dict[str, Any]]:
    rows = con.execute("SELECT alias, spec FROM routes ORDER BY alias").fetchall()
    return {alias: orjson.loads(spec) for alias, spec in rows}


def _record(con: Connection, alias: str, spec: dict[str, Any] | None, action: str,
            by: str | None, now: datetime) -> None:
    con.execute(
        "INSERT INTO route_history (alias, spec, action, changed_at, changed_by) "
        "VALUES (?, ?, ?, ?, ?)",
        [alias, None if spec is None else orjson.dumps(spec).decode(), action, now, by],
    )
    notify(con, ROUTES)  # every replica reloads its routes when this commits


def replace_routes(con: Connection, specs: dict[str, dict[str, Any]], by: str | None,
                   check: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> None:
    """Replace the whole table in one transaction, recording every change in the history;
    `check(current table)` runs first in it (storage/route_table_guard.py)."""
    now = datetime.now(UTC)
    with transaction(con):
        current = load_routes(con)
        if check is not None:
            check(current)
        for alias in current.keys() - specs.keys():
            con.execute("DELETE FROM routes WHERE alias = ?", [alias])
            _record(con, alias, None, "delete", by, now)
        for alias, spec in specs.items():
            if current.get(alias) == spec:
                continue
            _upsert(con, alias, spec, by, now)
            _record(con, alias, spec, "replace", by, now)


def _upsert(con: Connection, alias: str, spec: dict[str, Any], by: str | None,
            now: datetime) -> None:
    con.execute(
        upsert_sql("routes", ("alias", "spec", "updated_at", "updated_by"), "alias"),
        [alias, orjson.dumps(spec).decode(), now, by],
    )


def put_route(con: Connection, alias: str, spec: dict[str, Any], action: str,
              by: str | None) -> None:
    """Write one alias (promotion, rollback) and record the action in its history."""
    now = datetime.now(UTC)
    with transaction(con):
        _upsert(con, alias, spec, by, now)
        _record(con, alias, spec, action, by, now)


def route_history(con: Connection, alias: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    sql = "SELECT seq, alias, spec, action, changed_at, changed_by, detail FROM route_history"
    params: list[Any] = []
    if alias is not None:
        sql += " WHERE alias = ?"
        params.append(alias)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(limit)
    return [
        {
            "seq": seq,
            "alias": row_alias,
            "spec": None if spec is None else orjson.loads(spec),
            "action": action,
            "changed_at": changed_at.isoformat(),
            "changed_by": changed_by,
            "detail": None if detail is None else orjson.loads(detail),
        }
        for seq, row_alias, spec, action, changed_at, changed_by, detail in con.execute(sql, params)
        .fetchall()
    ]


def get_route(con: Connection, alias: str) -> dict[str, Any]:
    rows = con.execute("SELECT spec FROM routes WHERE alias = ?", [alias]).fetchall()
    row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"no route for alias {alias!r}")
    spec: dict[str, Any] = orjson.loads(row[0])
    return spec
