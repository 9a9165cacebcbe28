"""Migration 56: feedback by interaction (Postgres; nothing on DuckDB, whose scan of the
column is a few milliseconds at 200,000 entries and which does not use an index for it).

POST /v1/feedback counts a key's entries on the interaction before storing one
(`feedback_max_per_key`, storage/feedback.py), inside the store write every replica's writes
wait on: without an index that count read the whole table, 89 ms at 200,000 entries
(bench/feedback_limit.py). An item's feedback and its summary use it too. Built
CONCURRENTLY after the migration (storage.online_indexes): the table may be big already.
(Numbered 56: 55 is taken by a parallel branch.)
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    """Nothing: storage.online_indexes builds this migration's index."""
