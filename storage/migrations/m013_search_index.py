"""Migration 13: the first search index (replaced by migration 35)."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    # its backfill is gone: migration 35 rebuilds the index (the terms and tables changed)
    con.execute("CREATE TABLE search_docs (interaction_id VARCHAR PRIMARY KEY, "
                "term_keys BIGINT[] NOT NULL)")
    con.execute("CREATE TABLE search_terms (term_key BIGINT NOT NULL, "
                "interaction_id VARCHAR NOT NULL)")
