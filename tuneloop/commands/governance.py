"""`tuneloop forget --user ID` and `tuneloop retention [--days N]` (admin token)."""

from __future__ import annotations

import click

from tuneloop.commands.common import api_option, domain_errors, err_console, make_client


def _print(deleted: dict[str, int]) -> None:
    for table, count in sorted(deleted.items()):
        if count:
            err_console.print(f"  {table}: {count}", highlight=False)


@click.command("forget")
@click.option("--user", "user", required=True, help="The x-tuneloop-user value to forget.")
@api_option
@click.pass_context
@domain_errors
def forget(ctx: click.Context, user: str, api: str | None) -> None:
    """Delete one user's interactions, revisions, feedback and everything derived from them."""
    with make_client(ctx, api) as client:
        result = client.forget(user)
    click.echo(f"deleted {result['total']} rows for user {user!r}")
    _print(result["deleted"])


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
