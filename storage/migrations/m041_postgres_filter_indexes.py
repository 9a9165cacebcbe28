"""Migration 41: the indexes Postgres filters and forgets with (nothing to do on DuckDB).

DuckDB skips row groups by their min/max statistics; Postgres scans a whole table for a
condition on a column without an index (1.2-1.5 s for a user or session filter at 1M rows).
Indexes for the review list's user, session and time filters, and for `forget` (by user) and
retention (by time): `interactions_by_user`, `interactions_by_session`, `interactions_by_time`.

Edited after release (review r12x2 MED 2), a departure from "add-only" that leaves every
store's schema as it was: this migration built them with a plain CREATE INDEX, whose SHARE
lock on `interactions` stopped every replica's ingest for the whole build. They are now built
CONCURRENTLY after the migration (storage.online_indexes, which skips the ones a store
migrated before already has), so on Postgres the migration itself does nothing.
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    """Nothing: storage.online_indexes builds this migration's indexes."""
