"""Migration 21: fine-tuning jobs as tuneloop knows them."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE finetune_jobs (
            id VARCHAR PRIMARY KEY,
            provider VARCHAR NOT NULL,
            dataset_id VARCHAR,
            base_model VARCHAR NOT NULL,
            method VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            fine_tuned_model VARCHAR,
            spec JSON,
            error JSON,
            last_event_id VARCHAR,
            curves JSON,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ
        )
        """
    )
