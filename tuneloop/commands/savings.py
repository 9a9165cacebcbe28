"""`tuneloop savings --alias A [--days N] [--baseline M] [--json]`: what each target of an
alias costs per request and what a candidate (fine-tuned) target saves against the baseline,
per request and per day, and when its training pays for itself.

"Per day" is per day the target served (its first to its last request in the window, at least
one day): a canary started yesterday saves per day what it saved yesterday."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuneloop.commands.common import api_option, domain_errors, make_client

WIDE = 110  # columns the table needs; narrower terminals get one line per target


def _usd(value: float | None, digits: int = 6) -> str:
    return "no price" if value is None else f"${value:,.{digits}f}"


def _tokens(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def savings_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['alias']}: last {report['days']} days "
                        f"(baseline {report['baseline'] or 'none'})", title_justify="left")
    for column in ("target", "role", "requests", "prompt tok/req", "completion tok/req",
                   "cost/req", "saved/req", "saved/day"):
        table.add_column(column, justify="left" if column in ("target", "role") else "right",
                         min_width=20 if column == "target" else None, overflow="fold")
    for row in report["targets"]:
        other = "saved_usd_per_request" in row
        table.add_row(
            escape(row["target"]), row["role"], f"{row['requests']:,}",
            _tokens(row["prompt_tokens_per_request"]),
            _tokens(row["completion_tokens_per_request"]),
            _usd(row["cost_per_request_usd"]),
            _usd(row["saved_usd_per_request"]) if other else "",
            _usd(row["saved_usd_per_day"], 4) if other else "")
    return table


def summary(row: dict[str, Any]) -> str:
    """One target's saving against the baseline, and its break-even, in words."""
    text = (f"{row['target']}: saves {_tokens(row['saved_tokens_per_request'])} tokens a "
            f"request, {_tokens(row['saved_tokens_per_day'])} a day")
    if row["saved_usd_per_request"] is not None:
        text += (f"; {_usd(row['saved_usd_per_request'])} a request, "
                 f"{_usd(row['saved_usd_per_day'], 4)} a day")
    text += f" (per live day: it served {row['live_days']:,.2f} of the window's days)"
    training = row.get("training") or {}
    if training.get("cost_usd") is not None:
        text += f"; trained for {_usd(training['cost_usd'], 2)} (job {training['job_id']})"
    return text + f"; break-even: {row['break_even']}"


@click.command("savings")
@click.option("--alias", required=True, help="The alias apps send as their model.")
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True,
              help="Production traffic of the last N days.")
@click.option("--baseline", default=None,
              help="The target to compare with [default: the route's stable target].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@api_option
@click.pass_context
@domain_errors
def savings(ctx: click.Context, alias: str, days: int, baseline: str | None, as_json: bool,
            api: str | None) -> None:
    """Tokens and dollars per request per target, saved per day, and break-even."""
    with make_client(ctx, api) as client:
        report = client.savings(alias, days=days, baseline=baseline)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    if report["message"]:
        console.print(escape(report["message"]), highlight=False)
    if report["targets"] and console.width >= WIDE:
        console.print(savings_table(report))
    elif report["targets"]:  # a narrow terminal: one line per target
        console.print(f"{escape(report['alias'])}: last {report['days']} days (baseline "
                      f"{escape(report['baseline'] or 'none')})", highlight=False)
        for row in report["targets"]:
            console.print(escape(
                f"  {row['target']} ({row['role']}): {row['requests']:,} requests, "
                f"{_tokens(row['prompt_tokens_per_request'])} + "
                f"{_tokens(row['completion_tokens_per_request'])} tokens and "
                f"{_usd(row['cost_per_request_usd'])} a request"), highlight=False)
    for row in report["targets"]:
        if "break_even" in row:
            console.print(escape(summary(row)), highlight=False)
        elif row.get("note"):
            console.print(f"{escape(row['target'])}: {escape(row['note'])}", highlight=False)
