"""Migration 1: the log of interactions, one row per proxied request."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE interactions (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            endpoint VARCHAR NOT NULL,
            model VARCHAR,
            upstream_model VARCHAR,
            provider VARCHAR,
            route JSON,
            traffic VARCHAR NOT NULL DEFAULT 'production',
            request JSON,
            response JSON,
            status_code INTEGER,
            finish VARCHAR,
            error VARCHAR,
            latency_ms DOUBLE,
            ttfb_ms DOUBLE,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd DOUBLE,
            stream BOOLEAN,
            tags VARCHAR[],
            user_id VARCHAR,
            session_id VARCHAR,
            metadata JSON
        )
        """
    )
