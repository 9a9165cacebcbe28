"""Migration 46: the interactions ingested and not yet in the search index.

Ingest no longer indexes text in its transaction (tokenizing was most of its time): it lists
the new reviewable interactions in `search_pending`, and the background indexer
(storage.search_queue) indexes them in batches, removing each from the list in the same
transaction that writes its terms. `forget` and retention delete from it like from every
table with an `interaction_id`. Search also reads the (small) unindexed tail, so a row is
found as soon as it is ingested.

On Postgres, search_terms and search_words also get an index by interaction: `forget` and
retention delete an interaction's postings by id, which was a scan of the whole table (under
the write lock every replica waits for).

Edited after release (review r12x2 MED 2), a departure from "add-only" that leaves every
store's schema as it was: those two were built here with a plain CREATE INDEX, whose SHARE
lock stopped every write of the (big) postings tables for the whole build. They are now built
CONCURRENTLY after the migration (storage.online_indexes: `search_terms_by_interaction` only
on a store not yet past migration 48, which drops it).
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("CREATE TABLE search_pending (interaction_id VARCHAR PRIMARY KEY)")
