"""API keys the proxy issues to apps. Only a SHA-256 hash and a short prefix are stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from storage.db import Connection
from storage.notify import KEYS, notify
from tuneloop.errors import NotFound

KEY_PREFIX = "tl-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(con: Connection, name: str, feedback_relay: bool = False) -> dict[str, Any]:
    """Create a key; the plaintext is in the answer once and nowhere else. A
    `feedback_relay` key is an app backend's that sends its end users' feedback: its votes
    count per end user in the canary's test (storage/route_health.py)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    now = datetime.now(UTC)
    con.execute(
        "INSERT INTO api_keys (id, name, key_hash, prefix, created_at, feedback_relay) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [key_id, name, hash_key(plaintext), plaintext[:7], now, feedback_relay],
    )
    notify(con, KEYS)  # every replica reloads its keys when this commits
    return {"id": key_id, "name": name, "key": plaintext, "prefix": plaintext[:7],
            "created_at": now.isoformat(), "feedback_relay": feedback_relay}


def list_keys(con: Connection) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT id, name, prefix, created_at, revoked_at, coalesce(feedback_relay, false) "
        "FROM api_keys ORDER BY created_at"
    ).fetchall()
    return [
        {"id": i, "name": n, "prefix": p, "created_at": c.isoformat(),
         "revoked_at": r.isoformat() if r else None, "feedback_relay": bool(relay)}
        for i, n, p, c, r, relay in rows
    ]


def revoke_key(con: Connection, key_id: str) -> None:
    row = con.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING id",
        [datetime.now(UTC), key_id],
    ).fetchall()
    if not row:
        raise NotFound(f"no active key with id {key_id!r}")
    notify(con, KEYS)


def active_key_hashes(con: Connection) -> set[str]:
    rows = con.execute("SELECT key_hash FROM api_keys WHERE revoked_at IS NULL").fetchall()
    return {row[0] for row in rows}


def relay_key_hashes(con: Connection) -> set[str]:
    """The active keys marked `feedback_relay`."""
    rows = con.execute("SELECT key_hash FROM api_keys WHERE revoked_at IS NULL "
                       "AND feedback_relay").fetchall()
    return {row[0] for row in rows}


def key_hashes(con: Connection) -> tuple[set[str], set[str]]:
    """The active keys' hashes, and those of the relay keys among them (proxy.auth.KeyRing)."""
    return active_key_hashes(con), relay_key_hashes(con)
