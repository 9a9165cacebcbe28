"""How far the search index is behind: the rows listed in `search_pending` and the age of the
oldest (`lag_rows`, `lag_seconds` in /metrics), and those of them search's unindexed tail
leaves out (`tail_missed_rows`, /healthz). Counted by the background indexer
(storage.search_queue) each under a statement timeout on Postgres: a lock held on
`search_pending` (a migration's) or a backlog of millions must not hold a replica's
background loop; a count not done in time is reported unknown, not waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import psycopg

from storage.backend.dialect import table_exists
from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.search_index import PENDING
from storage.search_tail import tail_missed

T = TypeVar("T")


def index_lag(con: Connection) -> tuple[int, datetime | None]:
    """How many interactions wait to be indexed, and when the oldest of them was made."""
    if not table_exists(con, PENDING):
        return 0, None
    row = con.execute(f"SELECT count(*), min(i.created_at) FROM {PENDING} p "
                      "JOIN interactions i ON i.id = p.interaction_id").fetchall()[0]
    return int(row[0]), row[1]


def within(con: Connection, timeout_s: float, count: Callable[[Connection], T]) -> T | None:
    """`count(con)`, or None when it is not done within `timeout_s` on Postgres (a
    statement_timeout; the pooled connection is left without one). On DuckDB, in this
    process, it reads the list's narrow columns, no value: counted whole."""
    if not isinstance(con, PgConnection):
        return count(con)
    try:
        with con.statement_deadline(time.monotonic() + timeout_s):
            return count(con)
    except psycopg.errors.QueryCanceled:
        return None


def index_lag_within(con: Connection, timeout_s: float) -> tuple[int, datetime | None] | None:
    """`index_lag`, or None when not counted within `timeout_s` on Postgres."""
    return within(con, timeout_s, index_lag)


def tail_missed_within(con: Connection, lag_rows: int, timeout_s: float) -> int | None:
    """`tail_missed`, or None when not counted within `timeout_s` on Postgres."""
    return within(con, timeout_s, lambda c: tail_missed(c, lag_rows))
