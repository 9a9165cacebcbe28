"""Migration 28: a lease per cycle, so two cycles never run at once."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE cycle_leases (
            cycle VARCHAR PRIMARY KEY,
            holder VARCHAR NOT NULL,
            acquired_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )
        """
    )
