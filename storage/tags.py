"""Tags reviewers put on or take off interactions, kept beside the logged tags.

An interaction's effective tags are its logged tags, minus those a reviewer removed, plus those
a reviewer added. The logged `tags` column is never changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from storage.batch import insert_rows
from storage.db import Connection
from storage.lookup import Bounds, bounded, ids_condition
from storage.messages import is_reviewable
from tuneloop.errors import BadRequest

TAG_PATTERN = re.compile(r"[A-Za-z0-9:_.-]{1,64}")
MAX_TAGS_PER_CALL = 100
_SCHEMA = pa.schema([("interaction_id", pa.string()), ("tag", pa.string()),
                     ("removed", pa.bool_()), ("logged", pa.bool_()), ("reviewable", pa.bool_()),
                     ("interaction_created_at", pa.timestamp("us", tz="UTC")),
                     ("updated_at", pa.timestamp("us", tz="UTC")), ("updated_by", pa.string())])


def validate_tags(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TAGS_PER_CALL:
        raise BadRequest(f"{name} must be a list of at most {MAX_TAGS_PER_CALL} tags", param=name)
    for tag in value:
        if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
            raise BadRequest(f"{name}: {tag!r} is not a tag (each [A-Za-z0-9:_.-]{{1,64}})",
                             param=name)
    return list(dict.fromkeys(value))


def change_tags(con: Connection, ids: Sequence[str], add: Sequence[str],
                remove: Sequence[str], actor: str, now: datetime | None = None) -> set[str]:
    """Add and remove tags on existing interactions; returns the ids that exist."""
    both = set(add) & set(remove)
    if both:
        raise BadRequest(f"a tag can't be both added and removed: {sorted(both)}")
    if not add and not remove:
        raise BadRequest("send tags to add and/or remove")
    where, params = ids_condition("id", ids)
    found = {r[0]: r[1:] for r in con.execute(
        f"SELECT id, tags, endpoint, created_at FROM interactions WHERE {where}", params
    ).fetchall()}
    now = now or datetime.now(UTC)
    rows = [{"interaction_id": i, "tag": t, "removed": removed, "logged": t in (logged or []),
             "reviewable": is_reviewable(endpoint), "interaction_created_at": created_at,
             "updated_at": now, "updated_by": actor}
            for i, (logged, endpoint, created_at) in sorted(found.items())
            for tags, removed in ((add, False), (remove, True)) for t in tags]
    insert_rows(con, "interaction_tags", rows, _SCHEMA,
                "ON CONFLICT (interaction_id, tag) DO UPDATE SET removed = excluded.removed, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by")
    return set(found)


def effective_tags(con: Connection, logged: dict[str, list[str] | None]) -> dict[str, list[str]]:
    """Effective tags for the given ids, from their logged tags."""
    ids = list(logged)
    result = {i: list(tags or []) for i, tags in logged.items()}
    if not ids:
        return result
    where, params = ids_condition("interaction_id", ids)
    changes = con.execute(
        f"SELECT interaction_id, tag, removed FROM interaction_tags WHERE {where} "
        "ORDER BY interaction_id, tag", params).fetchall()
    for interaction_id, tag, removed in changes:
        tags = result[interaction_id]
        if removed and tag in tags:
            tags.remove(tag)
        elif not removed and tag not in tags:
            tags.append(tag)
    return result


def tags_of(con: Connection, interaction_id: str) -> list[str] | None:
    """The effective tags of one interaction (None when it was never logged)."""
    rows = con.execute("SELECT tags FROM interactions WHERE id = ?", [interaction_id]).fetchall()
    if not rows:
        return None
    return effective_tags(con, {interaction_id: rows[0][0]})[interaction_id]


def tag_condition(tag: str, alias: str = "i", bounds: Bounds | None = None
                  ) -> tuple[str, list[Any]]:
    """The interaction `alias` has `tag` (logged and not removed, or added)."""
    within, params = bounded("interaction_id", bounds)
    sql = (f"((? = ANY({alias}.tags) AND {alias}.id NOT IN (SELECT interaction_id "
           f"FROM interaction_tags WHERE tag = ? AND removed AND {within})) OR "
           f"{alias}.id IN (SELECT interaction_id FROM interaction_tags "
           f"WHERE tag = ? AND NOT removed AND {within}))")
    return sql, [tag, tag, *params, tag, *params]
