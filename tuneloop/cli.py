"""The `tuneloop` command. Domain errors become a clear message and an exit code here."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from tuneloop.client import ServerUnreachable
from tuneloop.commands.checkpoints import checkpoints
from tuneloop.commands.common import (
    admin_token,
    api_option,
    domain_errors,
    err_console,
    make_client,
    settings_from,
)
from tuneloop.commands.cycle import cycle
from tuneloop.commands.datasets import datasets, export_command
from tuneloop.commands.evaluate import evaluate
from tuneloop.commands.finetune import finetune, jobs
from tuneloop.commands.governance import compact, forget, retention
from tuneloop.commands.migrate_store import migrate_store
from tuneloop.commands.promote import promote, rollback
from tuneloop.commands.route_table import refuse_left_out, refuse_reverts
from tuneloop.commands.savings import savings
from tuneloop.commands.synthesize import synthesize
from tuneloop.commands.templates import templates
from tuneloop.commands.ui import ui
from tuneloop.errors import ConfigError, StorageError, Unauthorized
from tuneloop.sql_print import print_answer

if TYPE_CHECKING:
    from storage.db import Connection
    from tuneloop.config import Settings


HELP_ASKED = "tuneloop.help_asked"


class MainGroup(click.Group):
    """Notes whether the command line asks for a command's help (`tuneloop export --help`):
    the group's callback, which checks the settings, runs before the command parses its
    arguments, and a help must show whatever the settings are (review r12x2 LOW 6)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        words = args[:args.index("--")] if "--" in args else args
        ctx.meta[HELP_ASKED] = any(word in ctx.help_option_names for word in words)
        return super().parse_args(ctx, args)


@click.group(cls=MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML settings file.")
@click.option("--db", default=None,
              help="DuckDB file or postgresql:// URL [env TUNELOOP_DB; default "
              "./tuneloop.duckdb].")
@click.pass_context
@domain_errors
def main(ctx: click.Context, config_file: Path | None, db: str | None) -> None:
    """tuneloop: production LLM traffic in, fine-tuned model out."""
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = config_file
    ctx.obj["db"] = db
    if ctx.invoked_subcommand not in OWN_SETTINGS_FLAGS and not ctx.meta.get(HELP_ASKED):
        settings_from(ctx)  # built and checked now, before the command runs


OWN_SETTINGS_FLAGS = frozenset({"serve"})
"""Commands with settings flags of their own (serve's --config, --db, --host, ...): they build
the settings themselves, once, with those flags in (settings_from), so a check across fields
(sql_db needs a postgresql:// db, metrics_token needs metrics_auth = "token") sees them."""


@main.command()
@click.option("--host", default=None, help="Listen address [default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Listen port [default 4000].")
@click.option("--db", default=None,
              help="DuckDB file, or postgresql:// URL of a store shared by replicas "
              "[env TUNELOOP_DB].")
@click.option("--upstream", default=None, help="Default upstream base URL "
              "[env TUNELOOP_UPSTREAM; default https://api.openai.com/v1].")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML settings file.")
@click.pass_context
@domain_errors
def serve(ctx: click.Context, host: str | None, port: int | None, db: str | None,
          upstream: str | None, config_file: Path | None) -> None:
    """Run the proxy and admin API (this process owns the DuckDB file)."""
    import uvicorn

    # Everything the server creates (database, the WAL DuckDB re-creates after each checkpoint,
    # its temp files, spool, admin token) is owner-only, whatever umask the process inherited.
    os.umask(0o077)

    from proxy.app import create_app
    from proxy.auth import ensure_admin_token
    from proxy.server import open_relay_warning, uvicorn_options

    settings = settings_from(ctx, config_file=config_file, host=host, port=port, db=db,
                             upstream=upstream)
    settings, token_file = ensure_admin_token(settings)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if token_file:
        err_console.print(f"admin token in [bold]{escape(str(token_file))}[/] (mode 0600); "
                          "CLI commands on this machine read it from there", highlight=False)
    err_console.print(
        f"tuneloop proxy on http://{settings.host}:{settings.port}/v1 → {settings.upstream}, "
        f"logging to {settings.db_label}", highlight=False, markup=False,
    )
    warning = open_relay_warning(settings)
    if warning:
        logging.getLogger("tuneloop.proxy").warning("%s", warning)
        err_console.print(f"[bold red]{escape(warning)}[/]", highlight=False, markup=True)
    try:
        uvicorn.run(create_app(settings), **uvicorn_options(settings))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc


@main.command()
@click.argument("query")
@api_option
@click.option("--output", "--format", "-o", "output",
              type=click.Choice(["table", "vertical", "json", "csv"]), default="table",
              help="table (one record per block when it is wider than the terminal), "
              "vertical, json or csv; plain text, no markup.  [default: table]")
@click.option("--max-rows", type=click.IntRange(1), default=10_000, show_default=True)
@click.pass_context
@domain_errors
def sql(ctx: click.Context, query: str, api: str | None, output: str, max_rows: int) -> None:
    """Run one read-only SELECT: through the server's admin API while it runs, or on the
    database file directly when no server is running. A store named with --db (or
    TUNELOOP_DB) and no server named (--api, TUNELOOP_API) is read directly: a server that
    happens to listen on the default address may serve another store."""
    settings = settings_from(ctx)
    if "db" in settings.model_fields_set and api is None and "api" not in settings.model_fields_set:
        err_console.print(f"(reading {settings.db_label} directly; --api URL asks a server)",
                          highlight=False, markup=False)
        result = _read_directly(settings, query, max_rows, held_hint=(
            "--db names a store, not a server, so no server was asked: name the server that "
            "holds it with --api http://HOST:PORT (or set TUNELOOP_API)"))
        print_answer(result, output, sys.stdout,
                     lambda text: err_console.print(text, highlight=False, markup=False))
        return
    try:
        with make_client(ctx, api) as client:
            result = client.sql(query, max_rows)
    except Unauthorized as exc:
        if admin_token(settings) is not None:
            raise
        raise Unauthorized(f"{exc.message}; no token was found: TUNELOOP_ADMIN_TOKEN and "
                           "TUNELOOP_REVIEWER_TOKEN are unset and there is no admin-token file "
                           f"at {settings.admin_token_file} (`tuneloop serve` writes it beside "
                           "its database). Pass the server's database with --db (its token "
                           "file is read from beside it) and its address with --api, or set "
                           "TUNELOOP_ADMIN_TOKEN") from exc
    except ServerUnreachable as exc:
        if not settings.db_is_postgres and (settings.db_file is None
                                            or not settings.db_file.is_file()):
            where = (f"no database file at {settings.db_file}" if settings.db_file
                     else "no database file")
            raise ServerUnreachable(
                f"{exc.message}, and there is {where} to read directly: give the server's "
                "address with --api http://HOST:PORT (or set TUNELOOP_API), or the database "
                "with --db PATH (or set TUNELOOP_DB)") from exc
        err_console.print(f"(no server at {api or settings.api}; reading {settings.db_label} "
                          "directly)", highlight=False, markup=False)
        result = _read_directly(settings, query, max_rows, held_hint=(
            f"no server answers at {api or settings.api}, and the file is held by another "
            "process (a tuneloop server on another address?). Point this command at that "
            "server's admin API with --api http://HOST:PORT (or set TUNELOOP_API)"))
    print_answer(result, output, sys.stdout,
                 lambda text: err_console.print(text, highlight=False, markup=False))


def _read_directly(settings: Settings, query: str, max_rows: int, *,
                   held_hint: str) -> dict[str, Any]:
    """The query on the store itself: the DuckDB file read-only, or a Postgres session (as
    `sql_db` when set)."""
    from storage.sql import open_pg_for_sql, run_read_only

    con: Connection
    if settings.db_file is not None:
        if not settings.db_file.is_file():
            raise ServerUnreachable(f"no database file at {settings.db_file}")
        con = _open_file_for_sql(settings.db_file, held_hint)
    else:
        con = open_pg_for_sql(settings.sql_db.get_secret_value() if settings.sql_db
                              else str(settings.db))
    try:
        return run_read_only(con, query, max_rows=min(max_rows, settings.sql_max_rows),
                             timeout_s=settings.sql_timeout_s, max_bytes=settings.sql_max_bytes)
    finally:
        con.close()


def _open_file_for_sql(path: Path, held_hint: str) -> Connection:
    """The database file, read-only; when a process holds it, say to reach that server's
    admin API (`held_hint`), not to run `tuneloop sql` again."""
    from storage.db import connect

    try:
        return connect(path, read_only=True)
    except StorageError as exc:
        raise StorageError(f"{path} is held by another process: {exc.__cause__ or exc.message}"
                           f". {held_hint}") from exc


@main.group()
def keys() -> None:
    """API keys the proxy issues to apps (with issue_keys = true)."""


@keys.command("create")
@click.argument("name")
@click.option("--feedback-relay", is_flag=True,
              help="An app backend's key sending its end users' feedback: its votes count per "
                   "end user of the rated request in the canary's test, not as one voter.")
@api_option
@click.pass_context
@domain_errors
def keys_create(ctx: click.Context, name: str, feedback_relay: bool, api: str | None) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    with make_client(ctx, api) as client:
        created = client.create_key(name, feedback_relay=feedback_relay)
    click.echo(created["key"])
    err_console.print(f"key {created['id']} for {name}: store it now, it is not shown again",
                      markup=False)


@keys.command("revoke")
@click.argument("key_id")
@api_option
@click.pass_context
@domain_errors
def keys_revoke(ctx: click.Context, key_id: str, api: str | None) -> None:
    """Revoke a key by its id."""
    with make_client(ctx, api) as client:
        client.revoke_key(key_id)
    err_console.print(f"revoked {key_id}", markup=False)


@keys.command("rotate")
@click.argument("key_id")
@click.option("--grace", type=click.FloatRange(0, 720), default=0.0, show_default=True,
              help="Hours the old key stays valid while its app switches to the new one.")
@api_option
@click.pass_context
@domain_errors
def keys_rotate(ctx: click.Context, key_id: str, grace: float, api: str | None) -> None:
    """Replace a key: a new key for the same app (printed once), the old one revoked now or
    after --grace hours. A canary counts the new key's requests as the old key's (its usual
    rate before the canary), not as a new app's."""
    with make_client(ctx, api) as client:
        rotated = client.rotate_key(key_id, grace_hours=grace)
    click.echo(rotated["key"])
    err_console.print(f"key {rotated['id']} replaces {key_id} (revoked at "
                      f"{rotated['revoked_at']}): store it now, it is not shown again",
                      markup=False)
    if rotated.get("warning"):
        err_console.print(f"warning: {rotated['warning']}", markup=False)


@main.group()
def routes() -> None:
    """The alias route table."""


@routes.command("show")
@api_option
@click.pass_context
@domain_errors
def routes_show(ctx: click.Context, api: str | None) -> None:
    """Print the route table as JSON (its version, for `routes set --expect-seq`, on stderr)."""
    with make_client(ctx, api) as client:
        read = client.routes_with_seq()
    click.echo(json.dumps(read["routes"], indent=2))
    err_console.print(f"route table at history #{read['seq']}: `tuneloop routes set FILE "
                      f"--expect-seq {read['seq']}` refuses to undo changes made since",
                      markup=False)


@routes.command("history")
@click.option("--alias", default=None, help="Only this alias.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@api_option
@click.pass_context
@domain_errors
def routes_history(ctx: click.Context, alias: str | None, as_json: bool, api: str | None
                   ) -> None:
    """Every route change, newest first, with the canary test's verdict behind automatic
    promotions and rollbacks."""
    from tuneloop.commands.promote import describe_change
    with make_client(ctx, api) as client:
        items = client.route_history(alias)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo(describe_change(item))


@routes.command("set")
@click.argument("file", type=click.File("r"))
@click.option("--expect-seq", type=click.IntRange(min=0), default=None,
              help="The table version `routes show` printed: refused (exit 5) when an alias "
                   "this changes or deletes was changed since.")
@click.option("--force", is_flag=True,
              help="Delete the aliases FILE leaves out, change or delete aliases with an "
                   "open canary, put an alias back to a route it had before (refused "
                   "without: exit 5).")
@api_option
@click.pass_context
@domain_errors
def routes_set(ctx: click.Context, file: Any, expect_seq: int | None, force: bool,
               api: str | None) -> None:
    """Replace the route table with the JSON object in FILE (- for stdin)."""
    try:
        table = json.load(file)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file.name} is not JSON: {exc}") from exc
    with make_client(ctx, api) as client:
        if not force and isinstance(table, dict):
            read = client.routes_with_seq()
            refuse_left_out(read["routes"], table)
            if expect_seq is None:  # the server cannot know what FILE was read from
                refuse_reverts(client, read["routes"], table)
                expect_seq = read["seq"]
        result, warnings = client.put_routes_warned(table, expect_seq=expect_seq, force=force)
    click.echo(json.dumps(result, indent=2))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


main.add_command(ui)
main.add_command(forget)
main.add_command(retention)
main.add_command(compact)
main.add_command(synthesize)
main.add_command(export_command)
main.add_command(datasets)
main.add_command(finetune)
jobs.add_command(checkpoints)
main.add_command(jobs)
main.add_command(promote)
main.add_command(rollback)
main.add_command(savings)
main.add_command(evaluate)
main.add_command(cycle)
main.add_command(migrate_store)
main.add_command(templates)

if __name__ == "__main__":
    main()
