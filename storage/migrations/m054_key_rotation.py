"""Migration 54: an issued key's rows digest and its rotation chain (issue 14, r14l HIGH 1-2,
MED 3).

The canary's strata (exporter/canary_strata.py) give each client key its own usual rate; a
key absent from the history counts as a new app. Nothing told a rotated app's new key from a
fresh key an attacker holds, so a rotation is made explicit: `tuneloop keys rotate` records the
new key as the old one's successor (`rotated_from`), and both share a `stratum` (the chain's
first key's id). Rows carry `route.client_key`, a digest of the presented key keyed by a server
secret (proxy/background_opinion.py `key_of`), never a key id; the server keeps only the key's
SHA-256 hash, so the digest is recorded beside it (`client_key`) when the key is created, and
route health reads the rows of every key of a chain under its `stratum`
(storage/route_health.py). Keys created before this migration have no digest recorded: their
rotation is not linked (README).
"""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    con.execute("ALTER TABLE api_keys ADD COLUMN client_key VARCHAR")
    con.execute("ALTER TABLE api_keys ADD COLUMN stratum VARCHAR")
    con.execute("ALTER TABLE api_keys ADD COLUMN rotated_from VARCHAR")
