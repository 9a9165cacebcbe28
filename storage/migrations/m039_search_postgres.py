"""Migration 39: the indexes Postgres searches with (nothing to do on DuckDB)."""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection


def apply(con: Connection) -> None:
    """Postgres answers text search from btree indexes (its own inverted index over the term
    index of `storage.search_index`); DuckDB scans the columns with their min/max statistics
    and needs none of them.

    - search_terms (term_key, interaction_id) INCLUDE (fields): a term's postings newest
      first, read from the index alone, stopping after one page (the driver of
      `storage.search.TermSearch`), and a short range per term for `rarest`'s sample;
    - search_words (word text_pattern_ops): the words with a prefix (`refu*`, a LIKE 'refu%'
      range scan whatever the database's collation).
    """
    if dialect_of(con).name != "postgres":
        return
    con.execute("CREATE INDEX search_terms_by_term ON search_terms "
                "(term_key, interaction_id) INCLUDE (fields)")
    con.execute("CREATE INDEX search_words_by_prefix ON search_words (word text_pattern_ops)")
