"""Migration 25: a detail (promotion, rollback) per route change."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("ALTER TABLE route_history ADD COLUMN detail JSON")
