"""API keys the proxy issues to apps. Only a SHA-256 hash and a short prefix are stored, and the
digest the key's rows carry (`client_key`, proxy/background_opinion.py `key_of`: keyed by a
server secret, it tells nothing of the key).

A rotation (`rotate_key`) issues the old key's successor and revokes the old one now or after
a grace; both then share a `stratum` (the chain's first key's id), under which route health
reads the rows of every key of the chain: the canary's strata give the chain ONE allowance, its
history's (exporter/canary_strata.py, r14l)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.db import Connection
from storage.notify import KEYS, notify
from tuneloop.errors import BadRequest, NotFound

KEY_PREFIX = "tl-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_plaintext() -> str:
    """A new key's plaintext (its rows' digest is worked out from it by the caller)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(con: Connection, name: str, feedback_relay: bool = False,
               plaintext: str | None = None, client_key: str | None = None,
               rotated_from: str | None = None, stratum: str | None = None
               ) -> dict[str, Any]:
    """Create a key; the plaintext is in the answer once and nowhere else. A
    `feedback_relay` key is an app backend's that sends its end users' feedback: its votes
    count per end user in the canary's test (storage/route_health.py). `client_key`: the
    digest its rows will carry (`plaintext` given with it); `rotated_from` and `stratum`: a
    successor's (`rotate_key`)."""
    plaintext = plaintext or new_plaintext()
    key_id = "key_" + secrets.token_hex(8)
    now = datetime.now(UTC)
    con.execute(
        "INSERT INTO api_keys (id, name, key_hash, prefix, created_at, feedback_relay, "
        "client_key, rotated_from, stratum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [key_id, name, hash_key(plaintext), plaintext[:7], now, feedback_relay, client_key,
         rotated_from, stratum],
    )
    notify(con, KEYS)  # every replica reloads its keys when this commits
    return {"id": key_id, "name": name, "key": plaintext, "prefix": plaintext[:7],
            "created_at": now.isoformat(), "feedback_relay": feedback_relay,
            **({"rotated_from": rotated_from} if rotated_from else {})}


def rotate_key(con: Connection, key_id: str, plaintext: str, client_key: str,
               grace_hours: float = 0.0) -> dict[str, Any]:
    """Issue `key_id`'s successor (same name and `feedback_relay`, the given `plaintext`
    whose rows carry `client_key`) and revoke `key_id` now, or `grace_hours` from now (its
    app switches over meanwhile; a key already in its grace keeps the earlier end: r14m LOW).
    Both then share a stratum, the chain's first key's id:
    the canary's strata count them as one key with the chain's history (module doc). A key
    created before keys recorded their rows' digest (migration 54) and not used since cannot
    be linked: the answer's `linked` is false and says why."""
    if not 0 <= grace_hours <= 24 * 30:
        raise BadRequest("grace_hours is 0 to 720", param="grace_hours")
    now = datetime.now(UTC)
    found = con.execute(
        "SELECT name, coalesce(feedback_relay, false), client_key, coalesce(stratum, id), "
        "revoked_at FROM api_keys WHERE id = ? AND (revoked_at IS NULL OR revoked_at > ?)",
        [key_id, now]).fetchall()
    if not found:
        raise NotFound(f"no active key with id {key_id!r}")
    [(name, relay, old_digest, stratum, ending)] = found
    linked = old_digest is not None
    if linked:
        con.execute("UPDATE api_keys SET stratum = ? WHERE id = ?", [stratum, key_id])
    created = create_key(con, name, bool(relay), plaintext, client_key, key_id,
                         stratum if linked else None)
    revoke_at = now + timedelta(hours=grace_hours)
    if ending is not None:  # already in a grace: a rotation never extends the old key's life
        revoke_at = min(revoke_at, _aware(ending))
    con.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [revoke_at, key_id])
    answer = {**created, "linked": linked, "revoked": key_id,
              "revoked_at": revoke_at.isoformat()}
    if not linked:
        answer["warning"] = (
            f"key {key_id} was created before keys recorded the digest their requests carry "
            "and has sent no request since, so its successor is not linked to its history: "
            "the canary's strata judge the new key as a new app (slower decisions, never "
            "wrong ones) until it is in the history (history_hours)")
    return answer


def list_keys(con: Connection) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT id, name, prefix, created_at, revoked_at, coalesce(feedback_relay, false), "
        "rotated_from FROM api_keys ORDER BY created_at"
    ).fetchall()
    return [
        {"id": i, "name": n, "prefix": p, "created_at": c.isoformat(),
         "revoked_at": r.isoformat() if r else None, "feedback_relay": bool(relay),
         "rotated_from": rotated}
        for i, n, p, c, r, relay, rotated in rows
    ]


def revoke_key(con: Connection, key_id: str) -> None:
    """Revoke a key now (one in a rotation's grace too)."""
    now = datetime.now(UTC)
    row = con.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? "
        "AND (revoked_at IS NULL OR revoked_at > ?) RETURNING id",
        [now, key_id, now],
    ).fetchall()
    if not row:
        raise NotFound(f"no active key with id {key_id!r}")
    notify(con, KEYS)


def active_keys(con: Connection) -> dict[str, datetime | None]:
    """Each active key's hash and when it stops being valid (None: until revoked; a rotated
    key's grace end)."""
    rows = con.execute("SELECT key_hash, revoked_at FROM api_keys "
                       "WHERE revoked_at IS NULL OR revoked_at > ?",
                       [datetime.now(UTC)]).fetchall()
    return {key_hash: until for key_hash, until in rows}


def active_key_hashes(con: Connection) -> set[str]:
    return set(active_keys(con))


def relay_key_hashes(con: Connection) -> set[str]:
    """The active keys marked `feedback_relay`."""
    rows = con.execute("SELECT key_hash FROM api_keys WHERE (revoked_at IS NULL "
                       "OR revoked_at > ?) AND feedback_relay", [datetime.now(UTC)]).fetchall()
    return {row[0] for row in rows}


def key_hashes(con: Connection
               ) -> tuple[set[str], set[str], dict[str, datetime], set[str]]:
    """The active keys' hashes, those of the relay keys among them, when the ones in a
    rotation's grace stop being valid, and the ones without their rows' digest recorded
    (issued before migration 54: `record_client_key`) (proxy.auth.KeyRing)."""
    active = active_keys(con)
    undigested = {row[0] for row in con.execute(
        "SELECT key_hash FROM api_keys WHERE (revoked_at IS NULL OR revoked_at > ?) "
        "AND client_key IS NULL", [datetime.now(UTC)]).fetchall()}
    return (set(active), relay_key_hashes(con),
            {key_hash: until for key_hash, until in active.items() if until is not None},
            undigested)


def record_client_key(con: Connection, key_hash: str, client_key: str) -> None:
    """Record the digest a key's rows carry, worked out at a request with it (a key issued
    before migration 54, whose plaintext the server never kept): its rotation can then be
    linked to its history."""
    con.execute("UPDATE api_keys SET client_key = ? WHERE key_hash = ? AND client_key IS NULL",
                [client_key, key_hash])


def _aware(moment: datetime) -> datetime:
    """A stored time as UTC-aware (DuckDB may hand a TIMESTAMPTZ back in local time or naive)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
