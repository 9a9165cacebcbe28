"""Migration 50: the time index of interactions also holds the id (Postgres; nothing on
DuckDB, which skips row groups by their min/max statistics)."""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection


def apply(con: Connection) -> None:
    """A since/until review list bounds its walk of the primary key by the smallest and
    largest id of the range (storage/time_bounds.py), read by an index-only scan of this
    index. It replaces `interactions_by_time` (created_at alone), whose every use it serves,
    so ingest still writes one time index."""
    if dialect_of(con).name != "postgres":
        return
    con.execute("CREATE INDEX interactions_by_time_id ON interactions (created_at, id)")
    con.execute("DROP INDEX interactions_by_time")
