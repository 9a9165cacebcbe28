"""`tuneloop cycle --config cycle.toml [--every 6h]`: the scheduled export → fine-tune →
evaluate → canary → promote-or-roll-back job (see exporter/cycle.py). Safe under cron: a
concurrent invocation finds the lease held and does nothing. With `--every`, an open canary
is also evaluated every `[canary] watch_seconds` between runs (exporter/cycle_watch.py).
The server's warnings on a promotion the run made (a target at another server without
`api_key_env`) are printed as `warning: ...`, given in `--json`'s `warnings` and kept in the
step's detail."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape

from tuneloop.commands.common import (
    api_option,
    domain_errors,
    err_console,
    make_client,
    settings_from,
)
from tuneloop.commands.evaluate import proxy_api_key
from tuneloop.errors import TuneloopError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
log = logging.getLogger("tuneloop.cycle")


def parse_interval(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not an interval like 90s, 30m, 6h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@click.command("cycle")
@click.option("--config", "cycle_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="The cycle's TOML file (see exporter/cycle_config.py).")
@click.option("--every", default=None,
              help="Keep running: one cycle every interval (90s, 30m, 6h, 1d).")
@click.option("--force", is_flag=True,
              help="Train even when the data and [finetune] settings are those of an earlier "
                   "run that trained and reached a decision (else that run ends `unchanged`). "
                   "Applies to a run that exports in this invocation; ignored (and said so) while "
                   "a run is active past its export, e.g. a canary open or being settled.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each invocation's outcome as one JSON object (status, message, run, "
                   "step, outcome, warnings) instead of a line of text.")
@api_option
@click.pass_context
@domain_errors
def cycle(ctx: click.Context, cycle_file: Path, every: str | None, force: bool,
          as_json: bool, api: str | None) -> None:
    """Export, validate, fine-tune, evaluate, and canary-promote or roll back, gated."""
    from exporter.cycle import run_cycle
    from exporter.cycle_config import load_cycle_config
    from exporter.providers.registry import make_provider
    interval = parse_interval(every) if every else None
    if force and interval is not None:
        raise click.UsageError("--force with --every would train again at every run: run "
                               "`tuneloop cycle --force` once, then schedule without it")

    def once() -> str:
        config = load_cycle_config(cycle_file)
        settings = settings_from(ctx)
        key = proxy_api_key(settings, config.evaluate.api_key_env)
        with make_client(ctx, api) as client:
            outcome = run_cycle(client, config, api_key=key,
                                providers=lambda name: make_provider(name, settings),
                                say=lambda text: err_console.print(escape(text),
                                                                   highlight=False),
                                force=force)
        if as_json:
            click.echo(json.dumps({"cycle": config.name, **outcome.to_json()}))
        else:
            click.echo(f"cycle {config.name}: {outcome.status}: {outcome.message}")
        if (outcome.run or {}).get("outcome") == "dataset_rejected":
            return "dataset_rejected"  # the data needs a person: cron must notice
        return outcome.status

    if interval is None:
        status = domain_errors(once)()
        sys.exit({"error": 1, "failed": 1, "dataset_rejected": 2, "blocked": 9}.get(status, 0))

    def guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except TuneloopError as exc:  # keep the schedule; the next run resumes
                err_console.print(f"[bold red]error:[/] {escape(exc.message)}",
                                  highlight=False)
            except Exception:
                log.exception("cycle failed")
        return call

    def watch() -> None:
        from exporter.cycle_watch import watch_canary
        config = load_cycle_config(cycle_file)
        key = proxy_api_key(settings_from(ctx), config.evaluate.api_key_env)
        with make_client(ctx, api) as client:
            outcome = watch_canary(client, config, api_key=key)
        for text in outcome.warnings:
            err_console.print(escape(f"warning: {text}"), highlight=False)
        if outcome.status == "finished" and as_json:
            click.echo(json.dumps({"cycle": config.name, **outcome.to_json()}))
        elif outcome.status == "finished":
            click.echo(f"cycle {config.name}: canary decided: {outcome.message}")

    from exporter.cycle_watch import run_schedule
    watch_s = load_cycle_config(cycle_file).canary.watch_seconds
    run_schedule(guarded(once), guarded(watch), interval_s=interval, watch_s=watch_s,
                 stop=threading.Event())
