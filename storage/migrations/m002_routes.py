"""Migration 2: routes (alias to upstream spec) and their history."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE routes (
            alias VARCHAR PRIMARY KEY,
            spec JSON NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR
        )
        """
    )
    con.execute("CREATE SEQUENCE route_history_seq START 1")
    con.execute(
        """
        CREATE TABLE route_history (
            seq BIGINT PRIMARY KEY DEFAULT nextval('route_history_seq'),
            alias VARCHAR NOT NULL,
            spec JSON,
            action VARCHAR NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL,
            changed_by VARCHAR
        )
        """
    )
