"""tuneloop's own text headers (x-tuneloop-user, -session, -tags) read as the client meant.

The ASGI server hands header values over as bytes, which the proxy decodes as latin-1 (one
byte, one character: nothing is lost). An application sending a non-ASCII user id as UTF-8
(httpx with bytes, curl, most HTTP libraries) would then be stored as `mÃ¼ller` instead of
`müller`: under a name that `tuneloop forget --user müller` never matches, and pseudonymised
(redaction) from other bytes than forget's. So the value's bytes are read as UTF-8 when they
are UTF-8, and as latin-1 otherwise: Python's http.client (so `requests`, urllib) and Node
send a str header value as latin-1 (`müller` arrives as the byte 0xFC), and those requests
worked before; refusing them would break an application's production traffic, and read as
latin-1 they mean exactly what their sender wrote.
"""

from __future__ import annotations

from collections.abc import Mapping


def header_text(headers: Mapping[str, str], name: str) -> str | None:
    """The header `name` read as UTF-8 if its bytes are UTF-8, else as latin-1; None when
    absent."""
    value = headers.get(name)
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:  # not from the wire (already text beyond latin-1): as it is
        return value
    except UnicodeDecodeError:  # latin-1 bytes (http.client, Node): as they came
        return value
