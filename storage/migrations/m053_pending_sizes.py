"""Migration 53: each interaction listed for the search indexer (`search_pending`) with the
size of its text, `text_bytes`: its stored request's and response's text, in bytes, counted
at ingest from the values it inserts (storage.search_index `queue_for_index`).

Search's unindexed tail and the indexer's batches are bounded by bytes (storage.search_tail).
They took each listed row's size from its values, in the database; on Postgres that detoasts
and decompresses every value (json has no binary cast to text): with 30 rows of 24 MB in the
newest 500, that alone outran search's 2 s budget and every search was refused (review
r12x4 HIGH). Now the sizes are this column, and no value is read to size a row.

A plain nullable column, no default: adding it changes the catalog only. On Postgres its
moment of an exclusive lock on `search_pending` is asked with a lock_timeout and retried
(`with_brief_lock`, migration 51): a replica of the version before may be in a seconds-long
read of it (that very size query), and every replica's ingest would queue behind the ALTER.
The rows listed before, and those an older replica lists during a rolling deploy, have no size
(NULL): search's tail leaves them out (found once indexed, counted in `tail_missed`), and the
indexer measures them one at a time (storage.search_tail `next_batch`).
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.migrations.m051_search_vectors import with_brief_lock

ADD = "ALTER TABLE search_pending ADD COLUMN text_bytes BIGINT"


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        con.execute(ADD)
        return
    with_brief_lock(con, [ADD], migration=53, table="search_pending")
