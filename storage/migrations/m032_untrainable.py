"""Migration 32: the logged rows without a final answer, listed at ingest."""

from __future__ import annotations

from storage.db import Connection
from storage.trainable import mark_untrainable


def apply(con: Connection) -> None:
    con.execute("CREATE TABLE untrainable (interaction_id VARCHAR PRIMARY KEY, "
                "reason VARCHAR NOT NULL)")
    mark_untrainable(con, "interactions")  # one pass over the logged rows
