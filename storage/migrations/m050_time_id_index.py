"""Migration 50: the time index of interactions also holds the id (Postgres; nothing on
DuckDB, which skips row groups by their min/max statistics).

A since/until review list bounds its walk of the primary key by the smallest and largest id of
the range (storage/time_bounds.py), read by an index-only scan of `interactions_by_time_id`
(created_at, id). It replaces `interactions_by_time` (created_at alone), whose every use it
serves, so ingest still writes one time index.

Edited after release (review r12x2 MED 2), a departure from "add-only" that leaves every
store's schema as it was: this migration built the index with a plain CREATE INDEX, whose
SHARE lock on `interactions` stopped every replica's ingest for the whole build, then dropped
the old one. Now storage.online_indexes builds it CONCURRENTLY after the migration and only
then drops `interactions_by_time` (DROP INDEX CONCURRENTLY); a store migrated before already
has it and is left as it is. Until then a time range is walked through the old index.
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    """Nothing: storage.online_indexes builds this migration's index."""
