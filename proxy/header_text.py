"""tuneloop's own text headers (x-tuneloop-user, -session, -tags) read as UTF-8.

The ASGI server hands header values over as bytes, which the proxy decodes as latin-1 (one
byte, one character: nothing is lost). An application sends a non-ASCII user id as UTF-8, so
read as latin-1 `müller` would become `mÃ¼ller`: stored under a name that `tuneloop forget
--user müller` never matches, and pseudonymised (redaction) from other bytes than forget's.
The value is read back into its bytes and decoded as UTF-8; bytes that are not UTF-8 are a
client error (400), never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping

from tuneloop.errors import BadRequest


def header_text(headers: Mapping[str, str], name: str) -> str | None:
    """The header `name` decoded as UTF-8; None when absent."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire (already text beyond latin-1): as it is
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not valid UTF-8: send the value's UTF-8 bytes",
                         param=name) from None
