"""`tuneloop forget --user ID [--purge-exports] [--compact]`, `tuneloop retention [--days N]`
and `tuneloop compact` (admin token)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click
import orjson

from tuneloop.client import AdminClient, ServerUnreachable
from tuneloop.commands.common import (
    admin_token,
    api_option,
    domain_errors,
    err_console,
    make_client,
    settings_from,
)
from tuneloop.errors import BadRequest, DatabaseInUse, DatasetError

COMPACT_TIMEOUT_S = 3600.0


def _print(deleted: dict[str, int]) -> None:
    for table, count in sorted(deleted.items()):
        if count:
            err_console.print(f"  {table}: {count}", highlight=False, markup=False)


def _lineage_ids(directory: Path) -> set[str]:
    """The interaction ids an export directory's lineage names (its emitted lines)."""
    ids: set[str] = set()
    with (directory / "lineage.jsonl").open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            if record.get("split") in ("train", "validation"):
                ids.add(str(record.get("interaction_id")))
    return ids


def purge_export(export: dict[str, Any]) -> str:
    """Delete one export directory, after checking it is the tuneloop export whose lineage
    names the user's examples. Answers what was done."""
    raw = export.get("path")
    if not raw:
        return "no path recorded"
    directory = Path(raw)
    if not (directory / "manifest.json").is_file() or not (directory / "lineage.jsonl").is_file():
        return "not found here (already removed, or written on another machine)"
    try:
        named = _lineage_ids(directory)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DatasetError(f"{directory}/lineage.jsonl is unreadable ({exc}); not removed: "
                           "check it by hand") from exc
    if not named & set(export.get("interaction_ids") or ()):
        return "its lineage does not name the user's examples: kept"
    shutil.rmtree(directory)
    return "removed"


@click.command("forget")
@click.option("--user", "user", required=True, help="The x-tuneloop-user value to forget.")
@click.option("--purge-exports", is_flag=True,
              help="Also delete the export directories (on this machine) that hold the "
                   "user's examples.")
@click.option("--compact", "then_compact", is_flag=True,
              help="Then compact the database file so the deleted bytes are gone too.")
@api_option
@click.pass_context
@domain_errors
def forget(ctx: click.Context, user: str, purge_exports: bool, then_compact: bool,
           api: str | None) -> None:
    """Delete one user's interactions, revisions, feedback, evaluation-report examples and
    everything derived from them; name (or delete) the export files holding their examples."""
    with make_client(ctx, api) as client:
        result = client.forget(user)
    click.echo(f"deleted {result['total']} rows for user {user!r}")
    _print(result["deleted"])
    exports: list[dict[str, Any]] = result.get("exports") or []
    for export in exports:
        where = f"{export['dataset']} v{export['version']} at {export['path']}"
        files = ", ".join(export["files"])
        if purge_exports:
            click.echo(f"export {where}: {purge_export(export)}")
        else:
            click.echo(f"export {where} holds {export['examples']} of their examples "
                       f"({files}); --purge-exports deletes it")
        for job in export.get("finetune_jobs") or ():
            click.echo(f"  fine-tuning job {job['id']} ({job['provider']}, model "
                       f"{job['fine_tuned_model'] or 'none yet'}) was trained on it: delete its "
                       "uploaded files at the provider (and retrain without them) by hand")
    if then_compact:
        _compact(ctx, api)


@click.command("retention")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Delete interactions older than this [default: the retention_days setting].")
@api_option
@click.pass_context
@domain_errors
def retention(ctx: click.Context, days: int | None, api: str | None) -> None:
    """Apply the retention window now (the server also applies retention_days hourly)."""
    with make_client(ctx, api) as client:
        result = client.retention(days)
    click.echo(f"deleted {result['total']} rows older than {result['days']} days")
    _print(result["deleted"])


def _compact(ctx: click.Context, api: str | None) -> None:
    from storage.compact import POSTGRES_COMPACT, compact_file

    settings = settings_from(ctx)
    if settings.db_is_postgres:
        raise BadRequest(POSTGRES_COMPACT, code="not_supported")
    result: dict[str, Any]
    try:
        if settings.db_file is None or not settings.db_file.is_file():
            raise DatabaseInUse(f"no database file at {settings.db_label}")
        result = compact_file(settings.db_file).to_json()  # no server holds the file
        where = str(settings.db)
    except DatabaseInUse:
        base = api or settings.api
        with AdminClient(base, admin_token(settings), timeout_s=COMPACT_TIMEOUT_S,
                         actor="cli") as client:
            try:
                result = client.compact()
            except ServerUnreachable as exc:
                raise ServerUnreachable(f"{exc}, and {settings.db_label} can't be compacted here "
                                        "(missing, or held by another process)") from exc
        where = f"the server at {base}"
    click.echo(f"compacted {where}: {result['bytes_before']} -> {result['bytes_after']} bytes "
               f"in {result['seconds']} s; rows per table unchanged")


@click.command("compact")
@api_option
@click.pass_context
@domain_errors
def compact(ctx: click.Context, api: str | None) -> None:
    """Rewrite the database file so deleted rows' bytes are gone: directly when no server
    holds the file (--db), else through the server's admin API (admin token)."""
    _compact(ctx, api)
