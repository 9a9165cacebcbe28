"""Names users give to things that may end up in a filesystem path (dataset snapshots).

A dataset name is 1-64 characters from `[A-Za-z0-9._-]`, starting with a letter or digit, so
it is one plain path component everywhere. Anything that turns a name into a path also goes
through :func:`path_under`, which resolves it under its root and refuses an escape, whatever
the name checks let through.
"""

from __future__ import annotations

import re
from pathlib import Path

from tuneloop.errors import BadRequest

DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# path segments of the admin API under /admin/datasets/ that are not dataset names
RESERVED_DATASET_NAMES = frozenset({"examples", "trace"})


def dataset_name(value: object, param: str = "name") -> str:
    """The name as given, or a clear 400 (BadRequest) saying what a name may be."""
    if not isinstance(value, str) or not DATASET_NAME.fullmatch(value):
        shown = repr(value)[:80]
        raise BadRequest(
            f"{shown} is not a dataset name: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit",
            param=param,
            code="invalid_name",
        )
    if value in RESERVED_DATASET_NAMES:
        raise BadRequest(f"{value!r} is reserved; choose another dataset name", param=param,
                         code="invalid_name")
    return value


def path_under(root: Path, *parts: str) -> Path:
    """`root/part/...` resolved, refused unless it stays strictly inside `root`."""
    base = root.resolve()
    for part in parts:
        if not part or "\x00" in part or Path(part).is_absolute():
            raise BadRequest(f"{part!r} is not a relative path component", code="invalid_path")
    target = base.joinpath(*parts).resolve()
    if target == base or not target.is_relative_to(base):
        raise BadRequest(f"{'/'.join(parts)!r} escapes {base}", code="invalid_path")
    return target
