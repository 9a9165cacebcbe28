"""The review app's sign-in cookie: a reviewer stays signed in across browser reloads.

The cookie names the reviewer, a random id and an expiry, signed with HMAC-SHA256 under a
server-side secret (the `ui_cookie_secret` setting, or one generated once and kept beside the
database with mode 0600). Signing out records the cookie's id in a sign-out list beside the
secret (0600, pruned as entries expire), so a copy of a signed-out cookie is refused even
though its signature is still good; the list lives on disk, so a restart keeps it.

Nothing here touches Streamlit: `session.py` reads the cookie from `st.context.cookies` and
`browser.py` writes it. The cookie is set by the page's JavaScript, so it can't be HttpOnly
(Streamlit serves no response of ours to carry a Set-Cookie): it is SameSite=Strict, Secure
over https, and the page shows model text only as inert text.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import ConfigError

COOKIE_NAME = "tuneloop_review_session"
MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True)
class SignedIn:
    reviewer: str
    token_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (replacing it atomically)."""
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_secret(path: Path) -> bytes:
    """The secret kept in `path`, generated there (0600) the first time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = -1
    if fd < 0:
        secret = path.read_bytes().strip()
        if len(secret) < 32:
            raise ConfigError(f"{path} holds no usable secret (delete it to make a new one)")
        return secret
    secret = secrets.token_hex(32).encode()
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)
    return secret


class CookieSigner:
    """Issues and checks sign-in cookies; `signouts` is the sign-out list's file."""

    def __init__(self, secret: bytes, signouts: Path) -> None:
        if len(secret) < 16:
            raise ConfigError("ui_cookie_secret must be at least 16 bytes")
        self._secret = secret
        self._signouts = signouts

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, reviewer: str, *, now: int, ttl_s: int) -> str:
        body = {"r": reviewer, "i": secrets.token_urlsafe(18), "e": now + ttl_s}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def decode(self, cookie: str, *, now: int) -> SignedIn | None:
        """The signed-in reviewer, or None for a forged, expired or signed-out cookie."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            found = SignedIn(str(body["r"]), str(body["i"]), int(body["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if found.expires_at <= now or not found.reviewer or self._signed_out(found.token_id):
            return None
        return found

    def sign_out(self, cookie: str, *, now: int) -> None:
        """Refuse this cookie from now on (a no-op for one that is already refused)."""
        found = self.decode(cookie, now=now)
        if found is None:
            return
        with self._locked():
            entries = {i: e for i, e in self._read().items() if e > now}
            entries[found.token_id] = found.expires_at
            write_private(self._signouts, json.dumps(entries).encode())

    def _signed_out(self, token_id: str) -> bool:
        return token_id in self._read()

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self._signouts.read_bytes() or b"{}")
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _locked(self) -> AbstractContextManager[None]:
        return locked(self._signouts)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `path` (for its read-modify-write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
