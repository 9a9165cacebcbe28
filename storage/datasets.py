"""Dataset snapshots: a named, versioned record of which interactions (and which of their
revisions) an export took, and where each landed (split and line).

The items come from an export directory's `lineage.jsonl`, whose columns are those of
`DATASET_ITEMS_SCHEMA`; they are inserted through Arrow in one batch. Choosing the examples
(approved, latest revision) belongs to the review model; this module only records what an
export took, so `(dataset, split, line)` always traces back to an interaction and revision.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias

import orjson
import pyarrow as pa

from storage.backend import CONSTRAINT_ERRORS, staged
from storage.db import Connection
from storage.transaction import transaction
from tuneloop.errors import BadRequest, NotFound
from tuneloop.names import dataset_name

ItemBatches: TypeAlias = "pa.Table | pa.RecordBatchReader | Iterable[pa.Table | pa.RecordBatch]"
_NAMED = 5  # unknown interactions named in an error

SPLITS = ("train", "validation", "skipped")
DATASET_ITEMS_SCHEMA = pa.schema(
    [
        ("interaction_id", pa.string()),
        ("revision_id", pa.string()),
        ("revision", pa.int32()),
        ("split", pa.string()),
        ("line", pa.int32()),
        ("skipped", pa.string()),
    ]
)


def _items(items: pa.Table | pa.RecordBatch) -> pa.Table:
    if isinstance(items, pa.RecordBatch):
        items = pa.Table.from_batches([items])
    missing = set(DATASET_ITEMS_SCHEMA.names) - set(items.column_names)
    if missing:
        raise BadRequest(f"dataset items lack the columns {sorted(missing)}")
    table = items.select(DATASET_ITEMS_SCHEMA.names).cast(DATASET_ITEMS_SCHEMA)
    splits = set(table.column("split").unique().to_pylist())
    if not splits <= set(SPLITS):
        raise BadRequest(f"unknown splits {sorted(map(str, splits - set(SPLITS)))}")
    if table.column("interaction_id").null_count:
        raise BadRequest("every dataset item needs an interaction_id")
    return table


def _batches(items: ItemBatches) -> Iterable[pa.Table | pa.RecordBatch]:
    return [items] if isinstance(items, pa.Table) else items


def _insert_items(con: Connection, dataset_id: str, table: pa.Table) -> None:
    with staged(con, "_dataset_items", table, like="dataset_items"):
        con.execute(
            "INSERT INTO dataset_items SELECT ?, interaction_id, revision_id, revision, "
            "split, line, skipped FROM _dataset_items",
            [dataset_id],
        )


def _check_sources(con: Connection, dataset_id: str) -> None:
    """Every item names a logged interaction, and a revision it really has."""
    unknown = con.execute(
        "SELECT d.interaction_id FROM dataset_items d WHERE d.dataset_id = ? AND NOT EXISTS "
        "(SELECT 1 FROM interactions i WHERE i.id = d.interaction_id) "
        "ORDER BY 1 LIMIT ?", [dataset_id, _NAMED]).fetchall()
    if unknown:
        raise BadRequest("dataset items name interactions that were never logged: "
                         + ", ".join(r[0] for r in unknown))
    unknown = con.execute(
        "SELECT d.interaction_id, d.revision FROM dataset_items d WHERE d.dataset_id = ? "
        "AND d.revision > 0 AND NOT EXISTS (SELECT 1 FROM review_revisions r WHERE "
        "r.interaction_id = d.interaction_id AND r.revision = d.revision) "
        "ORDER BY 1 LIMIT ?", [dataset_id, _NAMED]).fetchall()
    if unknown:
        raise BadRequest("dataset items name revisions that don't exist: "
                         + ", ".join(f"{i} revision {n}" for i, n in unknown))


def create_dataset(
    con: Connection,
    *,
    name: str,
    format: str,
    items: ItemBatches,
    filter: Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | None = None,
    path: str | None = None,
    created_by: str | None = None,
    check_sources: bool = False,
) -> dict[str, Any]:
    """Record a snapshot as the next version of `name`, in one transaction. `items` is one
    Arrow table or a stream of batches (inserted as they come: memory stays bounded).
    `check_sources` refuses items naming unknown interactions or revisions."""
    dataset_name(name)
    dataset_id = "ds_" + secrets.token_hex(8)
    try:
        with transaction(con):
            version = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM datasets WHERE name = ?", [name]
            ).fetchall()[0][0]
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    dataset_id,
                    name,
                    version,
                    format,
                    orjson.dumps(dict(filter or {})).decode(),
                    orjson.dumps(dict(manifest or {})).decode(),
                    path,
                    datetime.now(UTC),
                    created_by,
                ],
            )
            for batch in _batches(items):
                table = _items(batch)
                if table.num_rows:
                    _insert_items(con, dataset_id, table)
            if check_sources:
                _check_sources(con, dataset_id)
    except CONSTRAINT_ERRORS as exc:
        raise BadRequest(f"dataset items must name each interaction once: {exc}") from exc
    return {"id": dataset_id, "name": name, "version": version}


_COLUMNS = "id, name, version, format, filter, manifest, path, created_at, created_by"


def _dataset(row: tuple[Any, ...], counts: Mapping[str, int]) -> dict[str, Any]:
    dataset_id, name, version, fmt, filt, manifest, path, created_at, created_by = row
    return {
        "id": dataset_id,
        "name": name,
        "version": version,
        "format": fmt,
        "filter": orjson.loads(filt) if filt else {},
        "manifest": orjson.loads(manifest) if manifest else {},
        "path": path,
        "created_at": created_at.isoformat(),
        "created_by": created_by,
        "counts": dict(counts),
    }


def _counts(con: Connection, dataset_id: str) -> dict[str, int]:
    rows = con.execute(
        "SELECT split, count(*) FROM dataset_items WHERE dataset_id = ? GROUP BY split",
        [dataset_id],
    ).fetchall()
    return {split: int(n) for split, n in rows}


def get_dataset(con: Connection, name_or_id: str, version: int | None = None) -> dict[str, Any]:
    """By id, or by name (the latest version unless `version` is given)."""
    if version is None:
        sql = (
            f"SELECT {_COLUMNS} FROM datasets WHERE id = ? OR name = ? "
            "ORDER BY (id = ?) DESC, version DESC LIMIT 1"
        )
        params: list[Any] = [name_or_id, name_or_id, name_or_id]
    else:
        sql = f"SELECT {_COLUMNS} FROM datasets WHERE name = ? AND version = ?"
        params = [name_or_id, version]
    rows = con.execute(sql, params).fetchall()
    if not rows:
        raise NotFound(f"no dataset {name_or_id!r}" + (f" version {version}" if version else ""))
    return _dataset(rows[0], _counts(con, rows[0][0]))


def list_datasets(con: Connection, name: str | None = None) -> list[dict[str, Any]]:
    sql = f"SELECT {_COLUMNS} FROM datasets"
    params: list[Any] = []
    if name is not None:
        sql += " WHERE name = ?"
        params.append(name)
    sql += " ORDER BY name, version DESC"
    rows = con.execute(sql, params).fetchall()
    return [_dataset(row, _counts(con, row[0])) for row in rows]


def trace_line(con: Connection, dataset_id: str, split: str, line: int) -> dict[str, Any]:
    """Which interaction and revision a line of an exported file came from."""
    rows = con.execute(
        "SELECT interaction_id, revision_id, revision FROM dataset_items "
        "WHERE dataset_id = ? AND split = ? AND line = ?",
        [dataset_id, split, line],
    ).fetchall()
    if not rows:
        raise NotFound(f"dataset {dataset_id} has no {split} line {line}")
    interaction_id, revision_id, revision = rows[0]
    return {"interaction_id": interaction_id, "revision_id": revision_id, "revision": revision}


def dataset_items(
    con: Connection, dataset_id: str, split: str | None = None, limit: int = 1000, offset: int = 0
) -> list[dict[str, Any]]:
    sql = (
        "SELECT interaction_id, revision_id, revision, split, line, skipped FROM dataset_items "
        "WHERE dataset_id = ?"
    )
    params: list[Any] = [dataset_id]
    if split is not None:
        sql += " AND split = ?"
        params.append(split)
    sql += " ORDER BY split, line NULLS LAST, interaction_id LIMIT ? OFFSET ?"
    params += [limit, offset]
    names = ("interaction_id", "revision_id", "revision", "split", "line", "skipped")
    return [dict(zip(names, row, strict=True)) for row in con.execute(sql, params).fetchall()]


def dataset_names(con: Connection) -> list[dict[str, Any]]:
    """One row per dataset name: how many versions, the latest, when it was made."""
    rows = con.execute(
        "SELECT name, count(*), max(version), max(created_at) FROM datasets "
        "GROUP BY name ORDER BY name").fetchall()
    return [{"name": name, "versions": int(n), "latest_version": int(latest),
             "updated_at": at.isoformat()} for name, n, latest, at in rows]


def trace(con: Connection, name_or_id: str, version: int | None, split: str,
          line: int) -> dict[str, Any]:
    """A line of an exported file → its dataset, interaction, and the revision it took (with
    the reviewer, action and time of that revision)."""
    dataset = get_dataset(con, name_or_id, version)
    found = trace_line(con, dataset["id"], split, line)
    detail = None
    if found["revision"]:
        rows = con.execute(
            "SELECT action, state, reviewer, created_at FROM review_revisions "
            "WHERE interaction_id = ? AND revision = ?",
            [found["interaction_id"], found["revision"]]).fetchall()
        if rows:
            action, state, reviewer, created_at = rows[0]
            detail = {"action": action, "state": state, "reviewer": reviewer,
                      "created_at": created_at.isoformat()}
    return {"dataset": {k: dataset[k] for k in ("id", "name", "version")}, "split": split,
            "line": line, **found, "revision_detail": detail}
