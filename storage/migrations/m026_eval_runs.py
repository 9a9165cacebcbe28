"""Migration 26: evaluation runs and their reports."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE eval_runs (
            id VARCHAR PRIMARY KEY,
            status VARCHAR NOT NULL,
            dataset VARCHAR,
            candidate VARCHAR NOT NULL,
            baseline VARCHAR NOT NULL,
            scorer VARCHAR NOT NULL,
            threshold DOUBLE,
            candidate_score DOUBLE,
            baseline_score DOUBLE,
            margin DOUBLE,
            report JSON,
            error VARCHAR,
            cycle_run_id VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ,
            created_by VARCHAR
        )
        """
    )
