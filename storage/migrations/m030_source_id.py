"""Migration 30: the interaction a request was made from (evaluation replays)."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    """The interaction a request was made from (`x-tuneloop-source`: evaluation replays)."""
    con.execute("ALTER TABLE interactions ADD COLUMN source_id VARCHAR")
