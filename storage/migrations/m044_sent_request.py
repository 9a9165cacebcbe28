"""Migration 44: what the target received, when a route target's transforms changed the
request (proxy.transforms); NULL when it got the app's request as sent (`request`)."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("ALTER TABLE interactions ADD COLUMN sent_request JSON")
