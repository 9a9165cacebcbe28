"""Migration 27: the scheduled cycle's runs and their steps."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE cycle_runs (
            id VARCHAR PRIMARY KEY,
            cycle VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            step VARCHAR,
            outcome VARCHAR,
            state JSON NOT NULL,
            config JSON,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ
        )
        """
    )
    con.execute("CREATE SEQUENCE cycle_steps_seq START 1")
    con.execute(
        """
        CREATE TABLE cycle_steps (
            seq BIGINT PRIMARY KEY DEFAULT nextval('cycle_steps_seq'),
            run_id VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            detail JSON,
            holder VARCHAR,
            recorded_at TIMESTAMPTZ NOT NULL
        )
        """
    )
