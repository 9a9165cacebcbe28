"""Migration 31: reviewers' claims on queue items."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE review_claims (
            interaction_id VARCHAR PRIMARY KEY,
            reviewer VARCHAR NOT NULL,
            claimed_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )
        """
    )
