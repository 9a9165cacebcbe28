"""Migration 3: issued API keys (hashes only)."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE api_keys (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            key_hash VARCHAR NOT NULL UNIQUE,
            prefix VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        )
        """
    )
