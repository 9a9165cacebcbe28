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
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("CREATE TABLE search_pending (interaction_id VARCHAR PRIMARY KEY)")
    if dialect_of(con).name != "postgres":
        return
    con.execute("CREATE INDEX search_terms_by_interaction ON search_terms (interaction_id)")
    con.execute("CREATE INDEX search_words_by_interaction ON search_words (interaction_id)")
