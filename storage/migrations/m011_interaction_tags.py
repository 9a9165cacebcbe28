"""Migration 11: tags reviewers add to or take off an interaction."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    # Tags reviewers add to (removed = false) or take off (removed = true) an interaction; the
    # interaction's own tags column is never changed. `logged` (the tag is among the logged
    # ones), `reviewable` and the creation time are copied facts, for stats without joins.
    con.execute(
        """
        CREATE TABLE interaction_tags (
            interaction_id VARCHAR NOT NULL,
            tag VARCHAR NOT NULL,
            removed BOOLEAN NOT NULL,
            logged BOOLEAN NOT NULL,
            reviewable BOOLEAN NOT NULL,
            interaction_created_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR,
            PRIMARY KEY (interaction_id, tag)
        )
        """
    )
