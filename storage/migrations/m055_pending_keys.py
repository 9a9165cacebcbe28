"""Migration 55: each interaction listed for the search indexer (`search_pending`) with the
client key that sent it, `client_key`, written at ingest (storage.search_index
`queue_for_index`) from the record the proxy spooled (proxy/exchange.py `client_key`, for every
request: a digest of its checked credential, never the credential).

The indexer shares its work between client keys (storage.search_fair). It took a row's key
from `interactions.route ->> 'client_key'`, which only a request to a route alias has: every
request naming a plain model (the default deployment) was key '' and shared one lane, so one
key's wide rows held back everyone's for minutes, and a key with aliases could join that lane
by naming a plain model (review r12y HIGH 2). Now the lanes are this column, read from
`search_pending` alone (no join to `interactions`).

A plain nullable column, no default: adding it changes the catalog only, its moment of an
exclusive lock on `search_pending` asked with a lock_timeout and retried on Postgres, like
migration 53. Rows listed before, and those a replica of an older version lists during a
rolling deploy, have no key (NULL): they share one lane, as every un-routed row did before.
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.migrations.m051_search_vectors import with_brief_lock

ADD = "ALTER TABLE search_pending ADD COLUMN client_key VARCHAR"


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        con.execute(ADD)
        return
    with_brief_lock(con, [ADD], migration=55, table="search_pending")
