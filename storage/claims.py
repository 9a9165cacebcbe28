"""Claims: a reviewer's lease on a queue item, so two reviewers never work on the same one.

A claim is a row (interaction, reviewer, expiry). It is live until `expires_at`; an expired row
means nothing and is deleted by the next claim-taking call, so a claim works the same across
server restarts (expiry is a timestamp, not a timer). Every function that changes claims runs
on the database's one writer thread (`Database.write`), which makes "find the next unclaimed
item, then claim it" atomic: two reviewers asking at once get different items.

- `storage.queue.next_item`: the reviewer's own live claim if it still matches the query and is
  not skipped, else the newest matching item nobody else holds; it is claimed, every other
  claim of that reviewer is released (one queue item per reviewer at a time).
- `claim`: take or renew (the holder calling again extends it); Conflict while another holds it.
- `release`: on skip, on leaving, and by review actions of the holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.backend import upsert_sql
from storage.db import Connection
from storage.lookup import ids_condition
from tuneloop.errors import Conflict, NotFound


@dataclass(frozen=True)
class Claim:
    interaction_id: str
    reviewer: str
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"claimed_by": self.reviewer, "claimed_until": self.expires_at.isoformat()}


def live_claims(con: Connection, ids: Sequence[str],
                now: datetime | None = None) -> dict[str, Claim]:
    """The live claims on these interactions, by id."""
    now = now or datetime.now(UTC)
    where, params = ids_condition("interaction_id", ids)
    rows = con.execute(f"SELECT interaction_id, reviewer, expires_at FROM review_claims "
                       f"WHERE {where} AND expires_at > ?", [*params, now]).fetchall()
    return {r[0]: Claim(r[0], r[1], r[2]) for r in rows}


def held_by_others(con: Connection, ids: Sequence[str], reviewer: str,
                   now: datetime | None = None) -> dict[str, Claim]:
    return {i: c for i, c in live_claims(con, ids, now).items() if c.reviewer != reviewer}


def conflict_message(claim: Claim) -> str:
    return (f"{claim.reviewer} is working on this item (claimed until "
            f"{claim.expires_at.isoformat(timespec='seconds')}); take the next item, or ask "
            f"{claim.reviewer} to release it")


def write_claim(con: Connection, interaction_id: str, reviewer: str, now: datetime,
           ttl_s: float) -> Claim:
    expires = now + timedelta(seconds=ttl_s)
    con.execute(upsert_sql("review_claims",
                           ("interaction_id", "reviewer", "claimed_at", "expires_at"),
                           "interaction_id"),
                [interaction_id, reviewer, now, expires])
    return Claim(interaction_id, reviewer, expires)


def _exists(con: Connection, interaction_id: str) -> bool:
    return bool(con.execute("SELECT 1 FROM interactions WHERE id = ?",
                            [interaction_id]).fetchall())


def claim(con: Connection, interaction_id: str, reviewer: str, ttl_s: float,
          now: datetime | None = None) -> Claim:
    """Take or renew the claim; Conflict (code `claimed`) while another reviewer holds it."""
    now = now or datetime.now(UTC)
    if not _exists(con, interaction_id):
        raise NotFound(f"no interaction with id {interaction_id!r}")
    other = held_by_others(con, [interaction_id], reviewer, now).get(interaction_id)
    if other is not None:
        raise Conflict(conflict_message(other), code="claimed")
    return write_claim(con, interaction_id, reviewer, now, ttl_s)


def release(con: Connection, ids: Sequence[str], reviewer: str) -> list[str]:
    """Release this reviewer's claims on these items (others' claims stay); the ids released."""
    if not ids:
        return []
    where, params = ids_condition("interaction_id", ids)
    rows = con.execute(f"DELETE FROM review_claims WHERE {where} AND reviewer = ? "
                       "RETURNING interaction_id", [*params, reviewer]).fetchall()
    return [r[0] for r in rows]
