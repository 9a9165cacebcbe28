"""Migration 29: whether tokens and cost were estimated at ingest."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    """True when tokens and cost were estimated at ingest (a stream without reported usage)."""
    con.execute("ALTER TABLE interactions ADD COLUMN usage_estimated BOOLEAN")
