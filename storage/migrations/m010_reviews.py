"""Migration 10: the review state of an interaction and every review action."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    # The current review state of an interaction (no row: pending, revision 0). The
    # interaction's creation time, model and logged tags (all immutable) are copied here so
    # stats need no join over every interaction.
    con.execute(
        """
        CREATE TABLE reviews (
            interaction_id VARCHAR PRIMARY KEY,
            state VARCHAR NOT NULL,
            revision INTEGER NOT NULL,
            messages JSON,
            reviewer VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            interaction_created_at TIMESTAMPTZ,
            model VARCHAR,
            logged_tags VARCHAR[]
        )
        """
    )
    # Every review action, never changed: messages NULL means the original message list.
    con.execute(
        """
        CREATE TABLE review_revisions (
            interaction_id VARCHAR NOT NULL,
            revision INTEGER NOT NULL,
            action VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            messages JSON,
            reason VARCHAR,
            reviewer VARCHAR NOT NULL,
            role VARCHAR,
            restores INTEGER,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (interaction_id, revision)
        )
        """
    )
