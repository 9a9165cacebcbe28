"""Migration 47: keys that relay their app's end users' feedback.

An app whose backend sends all of its users' feedback with one API key was one voter in the
canary's thumbs-down test (at most `max_votes_per_voter` votes per target): its users' votes
were lost. An admin marks such a key `feedback_relay` when issuing it; a relay key's votes
count per end user of the rated interaction (storage/route_health.py).
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("ALTER TABLE api_keys ADD COLUMN feedback_relay BOOLEAN DEFAULT false")
