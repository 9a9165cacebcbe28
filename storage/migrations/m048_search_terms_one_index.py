"""Migration 48: on Postgres, search_terms keeps one index (nothing to do on DuckDB).

Its index by interaction (migration 46, for `forget` and retention) cost the search indexer a
quarter of its server CPU (COPY of a batch's postings: 130.5 against 98.5 ms per 1,000 chat
rows, `bench/pg_index_write.py`) and of its WAL (17.5 against 13.2 KB per row ingested and
indexed, `bench/pg_ingest_together.py`). An interaction's postings are
found without it: their term keys are in its `search_docs` row, and the index by
(term_key, interaction_id) of migration 39 finds each (storage.search_index
`delete_postings`, which storage.governance uses on Postgres).
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        return
    con.execute("DROP INDEX IF EXISTS search_terms_by_interaction")
