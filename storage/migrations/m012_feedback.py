"""Migration 12: feedback scores on interactions."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE feedback (
            id VARCHAR PRIMARY KEY,
            interaction_id VARCHAR NOT NULL,
            score DOUBLE NOT NULL,
            comment VARCHAR,
            source VARCHAR,
            created_at TIMESTAMPTZ NOT NULL
        )
        """
    )
