"""Read queries over logged interactions: filtered, newest-first, cursor-paginated in DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from storage.db import Connection
from storage.lookup import ids_condition
from storage.records import COLUMNS, JSON_COLUMNS
from tuneloop.errors import NotFound

MAX_PAGE = 1000
MAX_USAGE_IDS = 1000


@dataclass(frozen=True)
class InteractionFilter:
    model: str | None = None
    status_code: int | None = None
    tag: str | None = None
    user: str | None = None
    session: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    traffic: str | None = None
    endpoint: str | None = None
    has_error: bool | None = None
    ids: tuple[str, ...] | None = None
    extra_sql: tuple[tuple[str, tuple[Any, ...]], ...] = field(default=())
    """Conditions other modules add (e.g. review state), each with its parameters."""

    def where(self, alias: str = "i") -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []

        def add(sql: str, *values: Any) -> None:
            clauses.append(sql)
            params.extend(values)

        if self.model is not None:
            add(f"({alias}.model = ? OR {alias}.upstream_model = ?)", self.model, self.model)
        if self.status_code is not None:
            add(f"{alias}.status_code = ?", self.status_code)
        if self.tag is not None:
            add(f"? = ANY({alias}.tags)", self.tag)
        if self.user is not None:
            add(f"{alias}.user_id = ?", self.user)
        if self.session is not None:
            add(f"{alias}.session_id = ?", self.session)
        if self.since is not None:
            add(f"{alias}.created_at >= ?", self.since)
        if self.until is not None:
            add(f"{alias}.created_at < ?", self.until)
        if self.traffic is not None:
            add(f"{alias}.traffic = ?", self.traffic)
        if self.endpoint is not None:
            add(f"{alias}.endpoint = ?", self.endpoint)
        if self.has_error is True:
            add(f"({alias}.error IS NOT NULL OR {alias}.status_code >= 400)")
        elif self.has_error is False:
            add(f"({alias}.error IS NULL AND {alias}.status_code < 400)")
        if self.ids is not None:
            add(f"{alias}.id IN (SELECT unnest(?::VARCHAR[]))", list(self.ids))
        for sql, values in self.extra_sql:
            add(sql, *values)
        return (" AND ".join(clauses) or "TRUE"), params


def row_to_item(names: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name, value in zip(names, row, strict=True):
        if name in JSON_COLUMNS and isinstance(value, str):
            value = orjson.loads(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        item[name] = value
    return item


def fetch_items(con: Connection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description or []]
    return [row_to_item(names, row) for row in cursor.fetchall()]


def list_interactions(
    con: Connection, flt: InteractionFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first. The cursor is the id of the last item of the previous page (ids are
    UUIDv7, so id order is time order)."""
    limit = max(1, min(limit, MAX_PAGE))
    where, params = flt.where()
    if cursor is not None:
        where += " AND i.id < ?"
        params.append(cursor)
    columns = ", ".join(f"i.{c}" for c in COLUMNS)
    items = fetch_items(
        con,
        f"SELECT {columns} FROM interactions i WHERE {where} ORDER BY i.id DESC LIMIT ?",
        [*params, limit + 1],
    )
    next_cursor = items[limit - 1]["id"] if len(items) > limit else None
    return items[:limit], next_cursor


def get_interaction(con: Connection, interaction_id: str) -> dict[str, Any]:
    columns = ", ".join(COLUMNS)
    items = fetch_items(con, f"SELECT {columns} FROM interactions WHERE id = ?", [interaction_id])
    if not items:
        raise NotFound(f"no interaction with id {interaction_id!r}")
    return items[0]


def interaction_exists(con: Connection, interaction_id: str) -> bool:
    rows = con.execute("SELECT 1 FROM interactions WHERE id = ?", [interaction_id]).fetchall()
    return bool(rows)


def usage_of(con: Connection, ids: Sequence[str]) -> dict[str, Any]:
    """How many of these interactions are logged, and their summed cost (None: none known)."""
    where, params = ids_condition("id", list(dict.fromkeys(ids)))
    logged, cost = con.execute(
        f"SELECT count(*), sum(cost_usd) FROM interactions WHERE {where}", params).fetchall()[0]
    return {"logged": int(logged), "cost_usd": None if cost is None else float(cost)}
