"""A prompt template's name and how a version is referred to (`support-bot-v2`)."""

from __future__ import annotations

import re

from tuneloop.errors import BadRequest

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSIONED_RE = re.compile(r"(.+)-v([0-9]{1,9})")


def check_name(name: object) -> str:
    """A template name: 1-63 of `A-Za-z0-9._-`, starting with a letter or digit, and not
    ending in `-v<digits>` (that is how a version is named)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadRequest(
            f"bad template name {name!r}: 1-63 characters of A-Z a-z 0-9 . _ -, starting with a "
            "letter or digit",
            param="name",
        )
    if _VERSIONED_RE.fullmatch(name):
        raise BadRequest(
            f"bad template name {name!r}: it must not end in -v<number> (that names a version)",
            param="name",
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`support-bot-v2` -> (`support-bot`, 2); `support-bot` -> (`support-bot`, None): the
    newest version."""
    if not isinstance(ref, str):
        raise BadRequest("a template reference is a string", param="template")
    found = _VERSIONED_RE.fullmatch(ref)
    if found:
        return check_name(found.group(1)), int(found.group(2))
    return check_name(ref), None
