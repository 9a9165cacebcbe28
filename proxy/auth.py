"""Who may do what: admin and reviewer tokens for /admin/*, and the keys the proxy may issue to
apps in place of the upstream key."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from enum import IntEnum

from pydantic import SecretStr

from storage.keys import KEY_PREFIX, hash_key
from tuneloop.config import Settings
from tuneloop.errors import ConfigError, Forbidden, Unauthorized

log = logging.getLogger("tuneloop.auth")


class Role(IntEnum):
    REVIEWER = 1
    ADMIN = 2


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("api-key") or headers.get("x-api-key") or None


def ensure_admin_token(settings: Settings) -> tuple[Settings, str | None]:
    """With no admin token configured (unset or blank: a blank token would lock everyone out),
    reuse or create one beside the database (mode 0600). Returns the settings to use and the
    file path when one was read or written there."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value().strip():
        return settings, None
    if settings.db_is_postgres:
        raise ConfigError("with a Postgres store, set TUNELOOP_ADMIN_TOKEN: every replica must "
                          "accept the same token, so none can be generated per machine")
    path = settings.admin_token_file
    if path.is_file():
        token = path.read_text().strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = "tla-" + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    return settings.model_copy(update={"admin_token": SecretStr(token)}), str(path)


class AdminAuth:
    def __init__(self, admin_token: str, reviewer_token: str | None):
        self._admin = admin_token.encode()
        self._reviewer = reviewer_token.encode() if reviewer_token else None

    def role_of(self, headers: Mapping[str, str]) -> Role:
        token = bearer(headers)
        if token is None:
            raise Unauthorized("this admin API needs a bearer token (TUNELOOP_ADMIN_TOKEN or "
                               "TUNELOOP_REVIEWER_TOKEN)")
        given = token.encode()
        if hmac.compare_digest(given, self._admin):
            return Role.ADMIN
        if self._reviewer is not None and hmac.compare_digest(given, self._reviewer):
            return Role.REVIEWER
        raise Unauthorized("the bearer token is not valid for this server")

    def require(self, headers: Mapping[str, str], role: Role) -> Role:
        actual = self.role_of(headers)
        if actual < role:
            raise Forbidden("the reviewer token may read and review; this needs the admin token")
        return actual


class MetricsAuth:
    """Who may read /metrics: anyone (`metrics_auth = "open"`), or (`"token"`) a bearer of the
    metrics token, the reviewer token or the admin token."""

    def __init__(self, required: bool, tokens: list[str]):
        self.required = required
        self._tokens = [token.encode() for token in tokens if token]

    @classmethod
    def from_settings(cls, settings: Settings, admin_token: str) -> MetricsAuth:
        tokens = [admin_token] + [secret.get_secret_value() for secret in
                                  (settings.reviewer_token, settings.metrics_token) if secret]
        return cls(settings.metrics_auth == "token", tokens)

    def check(self, headers: Mapping[str, str]) -> None:
        if not self.required:
            return
        token = bearer(headers)
        if token is None:
            raise Unauthorized("/metrics needs a bearer token here (metrics_auth = token): "
                               "TUNELOOP_METRICS_TOKEN, the reviewer or the admin token")
        given = token.encode()
        # every token compared, in constant time each: no early exit to time
        if not any([hmac.compare_digest(given, known) for known in self._tokens]):
            raise Unauthorized("the bearer token is not valid for /metrics")


class KeyRing:
    """Hashes of the keys the proxy issued (when settings.issue_keys), kept in memory, and
    of the `feedback_relay` keys among them (storage/keys.py)."""

    def __init__(self, hashes: set[str], relay: set[str] | None = None,
                 until: Mapping[str, datetime] | None = None,
                 undigested: set[str] | None = None):
        self._reloading = asyncio.Lock()
        self.replace(hashes, relay, until, undigested)

    async def reload(self, read: Callable[[], Awaitable[tuple[
            set[str], set[str], dict[str, datetime], set[str]]]]) -> None:
        """Reads the keys (storage/keys.py `key_hashes`) and keeps them, one reload at a time,
        so the last kept is the last read. Unserialized, a reload that read the keys before a
        key was issued (woken by another change) could land after the issuing request's own
        newer read, and the new key was refused (401) on that replica until the next change."""
        async with self._reloading:
            self.replace(*await read())

    def replace(self, hashes: set[str], relay: set[str] | None = None,
                until: Mapping[str, datetime] | None = None,
                undigested: set[str] | None = None) -> None:
        """`until`: when the keys in a rotation's grace stop being valid (storage/keys.py
        `rotate_key`), checked at each request: no reload needed when the grace ends.
        `undigested`: the keys whose rows' digest is not recorded yet (issued before
        migration 54; `take_undigested`)."""
        self._hashes = set(hashes)
        self._relay = set(relay or ())
        self._until = dict(until or {})
        self._undigested = set(undigested or ())

    def take_undigested(self, token: str) -> str | None:
        """The key's hash when its rows' digest is not recorded yet, once per key (the caller
        records it: storage/keys.py `record_client_key`); None otherwise."""
        if not self._undigested:
            return None
        hashed = hash_key(token)
        if hashed not in self._undigested:
            return None
        self._undigested.discard(hashed)
        return hashed

    def is_relay(self, token: str) -> bool:
        return hash_key(token) in self._relay

    def check(self, headers: Mapping[str, str]) -> None:
        token = bearer(headers)
        if token is None:
            raise Unauthorized("send the API key tuneloop issued to this app as a bearer token")
        hashed = hash_key(token)
        until = self._until.get(hashed)
        if not token.startswith(KEY_PREFIX) or hashed not in self._hashes \
                or (until is not None and until <= datetime.now(UTC)):
            raise Unauthorized("the API key is not valid or was revoked")
