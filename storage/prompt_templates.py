"""Frozen prompt templates (table `prompt_templates`, migration 46) and the traffic sample
template discovery reads.

A template version is immutable: `freeze_template` adds the next version of a name (1 for a
new name) and nothing updates or deletes a row. The version is chosen inside the write (one
writer on DuckDB, the cross-replica write lock on Postgres), and the primary key (name,
version) refuses a duplicate either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from storage.db import Connection
from storage.lookup import ids_condition
from tuneloop.errors import BadRequest, NotFound
from tuneloop.prompt_template import PromptTemplate, check_name, parse_ref

DISCOVERY_ENDPOINTS = ("chat.completions", "completions")
_COLUMNS = (
    "name",
    "version",
    "alias",
    "parts",
    "share",
    "tokens",
    "sample_size",
    "created_at",
    "created_by",
)
_PART_KEYS = (
    "system_prompt",
    "few_shot",
    "user_prefix",
    "user_suffix",
    "prompt_prefix",
    "prompt_suffix",
)


def sample_ids(
    con: Connection, model: str, limit: int, max_bytes: int, max_row_bytes: int
) -> tuple[list[str], dict[str, int]]:
    """The ids of the newest production chat and legacy requests addressed to `model` (an alias
    or a model name, as the app sent it) whose bodies fit in `max_bytes` together: at most
    `limit` of them, newest first, a body over `max_row_bytes` left out. Reads ids and lengths
    only (narrow columns), never a body; `request_texts` reads those in batches.

    Returns the ids and what was left out: `{"considered", "too_large", "over_budget"}`."""
    rows = con.execute(
        "SELECT id, length(CAST(request AS TEXT)) FROM interactions WHERE model = ? "
        "AND traffic = 'production' AND endpoint = ANY(?) AND request IS NOT NULL "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        [model, list(DISCOVERY_ENDPOINTS), limit],
    ).fetchall()
    ids: list[str] = []
    used = too_large = over_budget = 0
    for interaction_id, length in rows:
        size = int(length or 0)
        if size > max_row_bytes:
            too_large += 1
        elif used + size > max_bytes:
            over_budget += 1
        else:
            used += size
            ids.append(interaction_id)
    return ids, {"considered": len(rows), "too_large": too_large, "over_budget": over_budget}


def request_texts(con: Connection, ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """(endpoint, request JSON text, upstream model) of `ids`, newest first: the raw text, not
    parsed (the parsing happens where discovery runs, off the event loop)."""
    if not ids:
        return []
    where, params = ids_condition("id", list(ids))
    rows = con.execute(
        f"SELECT endpoint, CAST(request AS TEXT), upstream_model FROM interactions WHERE {where} "
        "ORDER BY created_at DESC, id DESC", params
    ).fetchall()
    return [(endpoint, text, model) for endpoint, text, model in rows if isinstance(text, str)]


def _optional_number(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number", param=key)
    if kind is int:
        if value != int(value) or value < 0:
            raise BadRequest(f"{key} must be a whole number >= 0", param=key)
        return int(value)
    if not 0 <= value <= 1:
        raise BadRequest(f"{key} must be between 0 and 1", param=key)
    return float(value)


def freeze_template(con: Connection, body: Mapping[str, Any], by: str | None) -> dict[str, Any]:
    """Store `body` (`name`, `parts`, and optionally `alias`, `share`, `tokens`,
    `sample_size`) as the next version of its name; returns the stored template."""
    name = check_name(body.get("name"))
    parts = body.get("parts")
    if not isinstance(parts, Mapping):
        raise BadRequest("parts must be a JSON object of template parts", param="parts")
    alias = body.get("alias")
    if alias is not None and (not isinstance(alias, str) or not 0 < len(alias) <= 256):
        raise BadRequest("alias must be a string of 1-256 characters", param="alias")
    share = _optional_number(body, "share", float)
    tokens = _optional_number(body, "tokens", int)
    sample_size = _optional_number(body, "sample_size", int)
    row = con.execute("SELECT max(version) FROM prompt_templates WHERE name = ?", [name]).fetchone()
    version = (row[0] if row and row[0] is not None else 0) + 1
    template = PromptTemplate.from_dict({**parts, "name": name, "version": version})
    con.execute(
        f"INSERT INTO prompt_templates ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            name,
            version,
            alias,
            orjson.dumps(template.parts()).decode(),
            share,
            tokens,
            sample_size,
            datetime.now(UTC),
            by,
        ],
    )
    return get_template(con, template.ref)


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(_COLUMNS, row, strict=True))
    parts = orjson.loads(item.pop("parts"))
    item["ref"] = f"{item['name']}-v{item['version']}"
    item["parts"] = {key: parts.get(key) for key in _PART_KEYS}
    item["created_at"] = item["created_at"].isoformat()
    return item


def get_template(con: Connection, ref: str) -> dict[str, Any]:
    """One version by `name-vN`, or the newest version of `name`."""
    name, version = parse_ref(ref)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM prompt_templates WHERE name = ?"
    params: list[Any] = [name]
    if version is not None:
        sql += " AND version = ?"
        params.append(version)
    rows = con.execute(sql + " ORDER BY version DESC LIMIT 1", params).fetchall()
    if not rows:
        raise NotFound(f"no prompt template {ref!r}")
    return _row(rows[0])


def load_template(con: Connection, ref: str) -> PromptTemplate:
    """The frozen template `ref` names, ready to match and strip with."""
    item = get_template(con, ref)
    return PromptTemplate.from_dict(
        {**item["parts"], "name": item["name"], "version": item["version"]}
    )


def list_templates(
    con: Connection, alias: str | None = None, limit: int = 200, offset: int = 0
) -> list[dict[str, Any]]:
    """Frozen versions (of templates found for `alias`, if given), by name, newest version
    first: `limit` of them from `offset` (pages; the admin API says when there are more)."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM prompt_templates"
    params: list[Any] = []
    if alias is not None:
        sql += " WHERE alias = ?"
        params.append(alias)
    sql += " ORDER BY name, version DESC LIMIT ? OFFSET ?"
    params += [limit, offset]
    return [_row(row) for row in con.execute(sql, params).fetchall()]
