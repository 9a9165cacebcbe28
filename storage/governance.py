"""Data governance: the retention window and forgetting one user, everywhere in storage.

Every table with an `interaction_id` column holds something derived from an interaction
(reviews, revisions, tags, feedback, the search index, dataset lineage, evaluation rows, ...),
so deletions find those tables from the schema instead of a list that a new table could miss.
Records the database refused sit in the spool's quarantine file; they are cleaned alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.db import Connection
from storage.spool import Spool

# Dataset lineage rows are pointers (ids, split, line), not content: the retention window
# keeps them so an exported file stays traceable; forgetting a user removes them too.
KEPT_BY_RETENTION = frozenset({"dataset_items"})


def dependent_tables(con: Connection) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT table_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND column_name = 'interaction_id' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def _delete(con: Connection, condition: str, params: list[Any], *,
            keep: frozenset[str] = frozenset()) -> dict[str, int]:
    """Delete the interactions matching `condition` and every row that depends on them, in
    one transaction. Answers rows deleted per table."""
    deleted: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE TEMP TABLE _doomed AS SELECT id FROM interactions WHERE {condition}", params
        )
        for table in dependent_tables(con):
            if table in keep:
                continue
            count = con.execute(
                f'DELETE FROM "{table}" WHERE interaction_id IN (SELECT id FROM _doomed)'
            ).fetchall()
            deleted[table] = int(count[0][0]) if count else 0
        count = con.execute("DELETE FROM interactions WHERE id IN (SELECT id FROM _doomed)"
                            ).fetchall()
        deleted["interactions"] = int(count[0][0]) if count else 0
        con.execute("DROP TABLE _doomed")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return deleted


def forget_user(con: Connection, user_id: str | Sequence[str]) -> dict[str, int]:
    """Delete one user's interactions, the ones made from them (evaluation replays carry
    their source's id, not its user), and everything derived from them. `user_id` may list
    the names the user is stored under (as sent, and its redaction pseudonym)."""
    names = [user_id] if isinstance(user_id, str) else list(user_id)
    return _delete(con, "list_contains(?, user_id) OR source_id IN (SELECT id FROM "
                        "interactions WHERE list_contains(?, user_id))", [names, names])


def retention_cutoff(days: int, *, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)


def apply_retention(con: Connection, days: int, *, now: datetime | None = None
                    ) -> dict[str, int]:
    """Delete interactions older than `days` days, with their revisions and the rest."""
    cutoff = retention_cutoff(days, now=now)
    return _delete(con, "created_at < ?", [cutoff], keep=KEPT_BY_RETENTION)


def forget_quarantined(spool: Spool, user_id: str | Sequence[str]) -> int:
    """The user's records among those the database refused (kept in the spool's quarantine)."""
    names = {user_id} if isinstance(user_id, str) else set(user_id)
    return spool.drop_quarantined(lambda record: record.get("user_id") in names)


def expire_quarantined(spool: Spool, days: int, *, now: datetime | None = None) -> int:
    cutoff_us = int(retention_cutoff(days, now=now).timestamp() * 1_000_000)

    def expired(record: dict[str, Any]) -> bool:
        created = record.get("created_at")
        return isinstance(created, int) and created < cutoff_us

    return spool.drop_quarantined(expired)
