"""Data governance: the retention window and forgetting one user, everywhere in storage.

Every table with an `interaction_id` column holds something derived from an interaction
(reviews, revisions, tags, feedback, the search index, dataset lineage, evaluation rows, ...),
so deletions find those tables from the schema instead of a list that a new table could miss.
Records the database refused sit in the spool's quarantine file; they are cleaned alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from storage.backend import upsert_sql
from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.lookup import ids_condition
from storage.records import forgotten_user_key
from storage.search_index import POSTINGS, delete_postings
from storage.spool import Spool
from storage.transaction import transaction

# Dataset lineage rows are pointers (ids, split, line), not content: the retention window
# keeps them so an exported file stays traceable; forgetting a user removes them too.
KEPT_BY_RETENTION = frozenset({"dataset_items"})


def dependent_tables(con: Connection) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT table_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND column_name = 'interaction_id' ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


Before = Callable[[Connection], None]
"""Runs in the deletion's transaction while the temp table `_doomed` lists the doomed ids."""


def _delete(con: Connection, condition: str, params: list[Any], *,
            keep: frozenset[str] = frozenset(), before: Before | None = None
            ) -> dict[str, int]:
    """Delete the interactions matching `condition` and every row that depends on them, in
    one transaction. Answers rows deleted per table."""
    deleted: dict[str, int] = {}
    dialect = dialect_of(con)
    with transaction(con):
        con.execute(
            f"CREATE TEMP TABLE _doomed AS SELECT id FROM interactions WHERE {condition}", params
        )
        if before is not None:
            before(con)
        if dialect.name == "postgres":  # before search_docs, which finds them
            keep = keep | {POSTINGS}
            deleted[POSTINGS] = delete_postings(con, [r[0] for r in con.execute(
                "SELECT id FROM _doomed ORDER BY id").fetchall()])
        for table in dependent_tables(con):
            if table in keep:
                continue
            deleted[table] = dialect.changed_rows(con.execute(
                f'DELETE FROM "{table}" WHERE interaction_id IN (SELECT id FROM _doomed)'))
        deleted["interactions"] = dialect.changed_rows(con.execute(
            "DELETE FROM interactions WHERE id IN (SELECT id FROM _doomed)"))
        con.execute("DROP TABLE _doomed")
    return deleted


def add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for table, count in more.items():
        total[table] = total.get(table, 0) + count


@dataclass
class Forgotten:
    deleted: dict[str, int]
    exports: list[dict[str, Any]]
    """The export directories whose files hold the user's examples (by their lineage)."""


def _exports_of_doomed(con: Connection) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT d.id, d.name, d.version, d.path, array_agg(DISTINCT i.split ORDER BY i.split), "
        "count(*) FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id "
        "WHERE i.interaction_id IN (SELECT id FROM _doomed) AND i.split <> 'skipped' "
        "GROUP BY d.id, d.name, d.version, d.path ORDER BY d.name, d.version"
    ).fetchall()
    return [{"dataset": name, "version": version, "path": path,
             "files": [f"{split}.jsonl" for split in splits] + ["lineage.jsonl"],
             "interaction_ids": [], "examples": int(count),
             "finetune_jobs": _jobs_of(con, dataset_id)}
            for dataset_id, name, version, path, splits, count in rows]


def _jobs_of(con: Connection, dataset_id: str) -> list[dict[str, Any]]:
    """Fine-tuning jobs made from a dataset: the provider holds its uploaded files, and the
    model learnt from them (outside tuneloop: named so that an operator can act)."""
    return [{"id": job, "provider": provider, "fine_tuned_model": model}
            for job, provider, model in con.execute(
                "SELECT id, provider, fine_tuned_model FROM finetune_jobs WHERE dataset_id = ? "
                "ORDER BY created_at", [dataset_id]).fetchall()]


def _doomed_ids_of(con: Connection, exports: list[dict[str, Any]]) -> None:
    for export in exports:
        export["interaction_ids"] = [row[0] for row in con.execute(
            "SELECT i.interaction_id FROM dataset_items i JOIN datasets d ON d.id = "
            "i.dataset_id WHERE d.name = ? AND d.version = ? AND i.split <> 'skipped' AND "
            "i.interaction_id IN (SELECT id FROM _doomed) ORDER BY 1",
            [export["dataset"], export["version"]]).fetchall()]


def _mentions(example: Any, doomed: set[str]) -> bool:
    """An example of an evaluation report made from a doomed interaction: its source, or
    the evaluation requests (each model's answer names its interaction)."""
    if not isinstance(example, dict):
        return False
    if example.get("source_id") in doomed:
        return True
    return any(isinstance(v, dict) and v.get("interaction_id") in doomed
               for v in example.values())


def forget_in_reports(con: Connection) -> int:
    """Remove the examples made from the doomed interactions from every evaluation report
    (they quote the prompt, the reference and both answers). Answers how many went."""
    doomed = {row[0] for row in con.execute("SELECT id FROM _doomed").fetchall()}
    if not doomed:
        return 0
    removed = 0
    for run_id, text in con.execute(
            "SELECT id, CAST(report AS VARCHAR) FROM eval_runs WHERE report IS NOT NULL"
    ).fetchall():
        report = orjson.loads(text)
        if not isinstance(report, dict):
            continue
        # the judgements (every example; a judge's reasons may quote the answers) and the
        # differences (some of the same examples)
        gone = 0
        for key in ("differences", "judgements"):
            examples = report.get(key)
            if isinstance(examples, list):
                kept = [d for d in examples if not _mentions(d, doomed)]
                report[key] = kept
                gone = max(gone, len(examples) - len(kept))
        if not gone:
            continue
        removed += gone
        report["forgotten"] = int(report.get("forgotten") or 0) + gone
        con.execute("UPDATE eval_runs SET report = ? WHERE id = ?",
                    [orjson.dumps(report).decode(), run_id])
    return removed


def _named(con: Connection, names: list[str]) -> tuple[str, list[Any]]:
    """The interactions naming one of `names` (as `user_id` or the request's `user` field), as
    SQL and its parameters. Postgres can't read any part of a JSON text holding an escaped NUL
    (`\\u0000`: `->>` fails on the whole row, and so would the statement): those (rare) rows
    are read in Python."""
    d = dialect_of(con)
    if not d.unescapes_nul_badly:
        return "(user_id = ANY(?) OR request ->> 'user' = ANY(?))", [names, names]
    has_nul = d.has_escaped_nul("request")
    wanted = set(names)
    named = []
    for id_, request in con.execute(
            f"SELECT id, request::text FROM interactions WHERE {has_nul}").fetchall():
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.loads(request) if request else None
            if isinstance(body, dict) and body.get("user") in wanted:
                named.append(id_)
    return (f"(user_id = ANY(?) OR CASE WHEN {has_nul} THEN id = ANY(?) "
            "ELSE request ->> 'user' = ANY(?) END)", [names, named, names])


def mark_forgotten(con: Connection, user_id: str | Sequence[str]) -> list[str]:
    """Record the user as forgotten (rows of theirs still in a replica's spool are skipped when
    ingested) and answer the ids of every interaction to delete: theirs and the ones made from
    them (evaluation replays carry their source's id, not its user), in id order. Run it in
    the write that starts a forget, so no row of theirs is ingested between the two."""
    names = [user_id] if isinstance(user_id, str) else list(user_id)
    now = datetime.now(UTC)
    for name in names:
        con.execute(upsert_sql("forgotten_users", ("user_sha256", "forgotten_at"),
                               "user_sha256"),
                    [forgotten_user_key(name), now])
    named, params = _named(con, names)
    return [row[0] for row in con.execute(
        f"SELECT id FROM interactions WHERE {named} OR source_id IN (SELECT id FROM "
        f"interactions WHERE {named}) ORDER BY id", [*params, *params]).fetchall()]


def forget_interactions(con: Connection, ids: Sequence[str]) -> Forgotten:
    """Delete these interactions of a forgotten user (`mark_forgotten`) and everything derived
    from them, their examples in evaluation reports included, in one transaction; name the
    export files that hold their examples."""
    exports: list[dict[str, Any]] = []
    reports = 0

    def before(con: Connection) -> None:
        nonlocal reports
        exports.extend(_exports_of_doomed(con))
        _doomed_ids_of(con, exports)
        reports = forget_in_reports(con)

    condition, params = ids_condition("id", ids)
    deleted = _delete(con, condition, params, before=before)
    deleted["eval_report_examples"] = reports
    return Forgotten(deleted, exports)


def forget_user(con: Connection, user_id: str | Sequence[str]) -> Forgotten:
    """Forget one user: `mark_forgotten`, then `forget_interactions` of all of theirs in one
    transaction. A user is found by `user_id` (the `x-tuneloop-user` header, else OpenAI's
    `user` body field) and by the request's `user` body field, so a request that named the
    user in its body is forgotten also when a header gave its `user_id` another name; `user_id`
    may list the names the user is stored under (as sent, and its redaction pseudonym). The
    proxy forgets in chunks instead (`forget_interactions` per chunk, `merge_exports`)."""
    return forget_interactions(con, mark_forgotten(con, user_id))


def merge_exports(exports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The export directories named by several chunks of one forget, each once: its examples
    added up, its interaction ids together."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for export in exports:
        key = (export["dataset"], export["version"])
        if key not in merged:
            merged[key] = {**export, "interaction_ids": list(export["interaction_ids"])}
            continue
        into = merged[key]
        into["examples"] += export["examples"]
        into["interaction_ids"] = sorted({*into["interaction_ids"], *export["interaction_ids"]})
        into["files"] = sorted({*into["files"], *export["files"]},
                               key=lambda f: (f == "lineage.jsonl", f))
    return sorted(merged.values(), key=lambda e: (e["dataset"], e["version"]))


def retention_cutoff(days: int, *, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)


def apply_retention_chunk(con: Connection, days: int, limit: int, *,
                          now: datetime | None = None) -> dict[str, int]:
    """Delete the oldest `limit` interactions (at most) older than `days` days, with their
    revisions and the rest, in one transaction; fewer than `limit` deleted: none are left."""
    cutoff = retention_cutoff(days, now=now)
    return _delete(con, "id IN (SELECT id FROM interactions WHERE created_at < ? ORDER BY id "
                        "LIMIT ?)", [cutoff, limit], keep=KEPT_BY_RETENTION)


def apply_retention(con: Connection, days: int, *, now: datetime | None = None,
                    chunk_rows: int = 10_000) -> dict[str, int]:
    """Delete interactions older than `days` days, with their revisions and the rest, a
    transaction per `chunk_rows` interactions."""
    deleted: dict[str, int] = {}
    while True:
        chunk = apply_retention_chunk(con, days, chunk_rows, now=now)
        add_counts(deleted, chunk)
        if chunk["interactions"] < chunk_rows:
            return deleted


def forget_quarantined(spool: Spool, user_id: str | Sequence[str]) -> int:
    """The user's records among those the database refused (kept in the spool's quarantine)."""
    names = {user_id} if isinstance(user_id, str) else set(user_id)

    def theirs(record: dict[str, Any]) -> bool:
        request = record.get("request")
        body_user = request.get("user") if isinstance(request, dict) else None
        return record.get("user_id") in names or body_user in names

    return spool.drop_quarantined(theirs)


def expire_quarantined(spool: Spool, days: int, *, now: datetime | None = None) -> int:
    cutoff_us = int(retention_cutoff(days, now=now).timestamp() * 1_000_000)

    def expired(record: dict[str, Any]) -> bool:
        created = record.get("created_at")
        return isinstance(created, int) and created < cutoff_us

    return spool.drop_quarantined(expired)
