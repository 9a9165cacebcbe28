"""Migration 22: the events of fine-tuning jobs as they were shown."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE finetune_job_events (
            job_id VARCHAR NOT NULL,
            event_id VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            created_at TIMESTAMPTZ,
            level VARCHAR,
            message VARCHAR,
            type VARCHAR,
            data JSON,
            PRIMARY KEY (job_id, event_id)
        )
        """
    )
