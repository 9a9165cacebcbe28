"""Migration 42: frozen prompt templates (tuneloop/prompt_template.py), one row per version.

A version never changes once written: freezing a name again adds the next version.
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE prompt_templates (
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            alias VARCHAR,
            parts JSON NOT NULL,
            share DOUBLE,
            tokens INTEGER,
            sample_size INTEGER,
            created_at TIMESTAMPTZ NOT NULL,
            created_by VARCHAR,
            PRIMARY KEY (name, version)
        )
        """
    )
