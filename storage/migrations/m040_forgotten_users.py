"""Migration 40: the users that `forget` erased, and when.

With several replicas, an interaction of a forgotten user can still sit in another replica's
spool when `forget` runs, and be ingested after it. Ingest skips the rows of a listed user
made before the forget (storage.records); later traffic of that user is logged as usual.
The user is kept as the SHA-256 of the stored name, never the name itself: after a forget, no
table holds it.
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("CREATE TABLE forgotten_users (user_sha256 VARCHAR PRIMARY KEY, "
                "forgotten_at TIMESTAMPTZ NOT NULL)")
