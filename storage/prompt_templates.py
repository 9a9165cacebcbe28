"""Frozen prompt templates (table `prompt_templates`, migration 46) and the traffic sample
template discovery reads.

A template version is immutable: `freeze_template` adds the next version of a name (1 for a
new name) and nothing updates or deletes a row. The version is chosen inside the write (one
writer on DuckDB, the cross-replica write lock on Postgres), and the primary key (name,
version) refuses a duplicate either way.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def recent_requests(
    con: Connection, model: str, limit: int
) -> list[tuple[str, Any, str | None]]:
    """The newest `limit` production chat and legacy requests addressed to `model` (an alias or
    a model name, as the app sent it): (endpoint, parsed request, upstream model) triples.

    Two steps: the ids first (narrow columns), then the request bodies of those ids only, so a
    large table's other requests are never read (at 100k rows of 4 KB: ~0.25 s for 2,000)."""
    ids = [row[0] for row in con.execute(
        "SELECT id FROM interactions WHERE model = ? AND traffic = 'production' "
        "AND endpoint = ANY(?) AND request IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT ?",
        [model, list(DISCOVERY_ENDPOINTS), limit],
    ).fetchall()]
    where, params = ids_condition("id", ids)
    rows = con.execute(
        f"SELECT endpoint, request, upstream_model FROM interactions WHERE {where} "
        "ORDER BY created_at DESC, id DESC", params
    ).fetchall()
    out: list[tuple[str, Any, str | None]] = []
    for endpoint, request, upstream_model in rows:
        try:
            out.append((endpoint, orjson.loads(request), upstream_model))
        except orjson.JSONDecodeError:
            continue  # a row written by hand; discovery reads what it can
    return out


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
    con: Connection, alias: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Every frozen version (of templates found for `alias`, if given), newest first."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM prompt_templates"
    params: list[Any] = []
    if alias is not None:
        sql += " WHERE alias = ?"
        params.append(alias)
    sql += " ORDER BY name, version DESC LIMIT ?"
    params.append(limit)
    return [_row(row) for row in con.execute(sql, params).fetchall()]
