"""Migration 35: the search index by field, rebuilt for every interaction."""

from __future__ import annotations

from storage.db import Connection
from storage.search_index import backfill


def apply(con: Connection) -> None:
    """The search index by field (system / user / answer), with normalized, stemmed and
    character-gram terms and the words for prefix search: built anew for every interaction
    (see storage.search_index), in chunks."""
    con.execute("DROP TABLE search_terms")
    con.execute("DROP TABLE search_docs")
    con.execute("CREATE TABLE search_docs (interaction_id VARCHAR PRIMARY KEY, "
                "term_keys BIGINT[] NOT NULL, term_fields UTINYINT[] NOT NULL)")
    con.execute("CREATE TABLE search_terms (term_key BIGINT NOT NULL, "
                "interaction_id VARCHAR NOT NULL, fields UTINYINT NOT NULL)")
    con.execute("CREATE TABLE search_words (word VARCHAR PRIMARY KEY, term_key BIGINT NOT NULL, "
                "interaction_id VARCHAR NOT NULL)")
    backfill(con)
