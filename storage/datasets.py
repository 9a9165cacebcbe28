"""Dataset snapshots: a named, versioned record of which interactions (and which of their
revisions) an export took, and where each landed (split and line).

The items come from an export directory's `lineage.jsonl`, whose columns are those of
`DATASET_ITEMS_SCHEMA`; they are inserted through Arrow in one batch. Choosing the examples
(approved, latest revision) belongs to the review model; this module only records what an
export took, so `(dataset, split, line)` always traces back to an interaction and revision.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from storage.db import Connection
from tuneloop.errors import BadRequest, NotFound

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


def m020_datasets(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE datasets (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            format VARCHAR NOT NULL,
            filter JSON,
            manifest JSON,
            path VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            created_by VARCHAR,
            UNIQUE (name, version)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE dataset_items (
            dataset_id VARCHAR NOT NULL,
            interaction_id VARCHAR NOT NULL,
            revision_id VARCHAR,
            revision INTEGER,
            split VARCHAR NOT NULL,
            line INTEGER,
            skipped VARCHAR,
            PRIMARY KEY (dataset_id, interaction_id)
        )
        """
    )


def _items(items: pa.Table) -> pa.Table:
    missing = set(DATASET_ITEMS_SCHEMA.names) - set(items.column_names)
    if missing:
        raise BadRequest(f"dataset items lack the columns {sorted(missing)}")
    table = items.select(DATASET_ITEMS_SCHEMA.names).cast(DATASET_ITEMS_SCHEMA)
    splits = set(table.column("split").unique().to_pylist())
    if not splits <= set(SPLITS):
        raise BadRequest(f"unknown splits {sorted(map(str, splits - set(SPLITS)))}")
    return table


def create_dataset(
    con: Connection,
    *,
    name: str,
    format: str,
    items: pa.Table,
    filter: Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | None = None,
    path: str | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Record a snapshot as the next version of `name`, in one transaction."""
    table = _items(items)
    dataset_id = "ds_" + secrets.token_hex(8)
    con.execute("BEGIN TRANSACTION")
    try:
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
        con.register("_dataset_items", table)
        try:
            con.execute(
                "INSERT INTO dataset_items SELECT ?, interaction_id, revision_id, revision, "
                "split, line, skipped FROM _dataset_items",
                [dataset_id],
            )
        finally:
            with contextlib.suppress(duckdb.Error):
                con.unregister("_dataset_items")
        con.execute("COMMIT")
    except duckdb.ConstraintException as exc:
        con.execute("ROLLBACK")
        raise BadRequest(f"dataset items must name each interaction once: {exc}") from exc
    except Exception:
        con.execute("ROLLBACK")
        raise
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
