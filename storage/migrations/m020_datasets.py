"""Migration 20: dataset snapshots and the items each export took."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE datasets (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            format VARCHAR NOT NULL,
            filter JSON,
            manifest JSON,
            path VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            created_by VARCHAR,
            UNIQUE (name, version)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE dataset_items (
            dataset_id VARCHAR NOT NULL,
            interaction_id VARCHAR NOT NULL,
            revision_id VARCHAR,
            revision INTEGER,
            split VARCHAR NOT NULL,
            line INTEGER,
            skipped VARCHAR,
            PRIMARY KEY (dataset_id, interaction_id)
        )
        """
    )
