"""What every `tuneloop` command shares: errors to exit codes, settings, the admin client."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from tuneloop.client import AdminClient
from tuneloop.config import Settings, canary_share_problem, load_settings
from tuneloop.errors import TuneloopError

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True)


def domain_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TuneloopError as exc:
            # as written: no `:x:` turned into an emoji, no line breaks inside a command the
            # message prints (the terminal wraps; a pasted command must stay one command)
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False,
                              emoji=False, soft_wrap=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def canary_share(ctx: click.Context, param: click.Parameter, value: float | None
                 ) -> float | None:
    """A `--canary` option's check: a number from MIN_CANARY_SHARE to MAX_CANARY_SHARE, or 100
    (tuneloop/config.py), as the server checks it."""
    problem = None if value is None else canary_share_problem(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def gate_confidence(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A `--confidence` option's check: below the gate's floor (exporter/eval_gate.py
    MIN_CONFIDENCE, as the cycle's [evaluate] confidence) it is refused."""
    from exporter.eval_gate import confidence_problem

    problem = confidence_problem(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def refuse_unused_judge_options(scorer: str, judge_model: str | None,
                                rubric: object | None) -> None:
    """`--judge-model` / `--rubric` are the judge scorer's: with another scorer they would be
    silently ignored (an exact-match evaluation the user took for a judged one)."""
    given = [flag for flag, value in (("--judge-model", judge_model), ("--rubric", rubric))
             if value is not None]
    if given and scorer != "judge":
        raise click.UsageError(f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} for "
                               f"the judge scorer, but the scorer is {scorer!r}: add --scorer "
                               f"judge, or leave {' and '.join(given)} out")


def settings_from(ctx: click.Context, **flags: Any) -> Settings:
    """The settings, built once: from the group's --config and --db, with a command's own
    settings flags (`flags`, serve's) in front of them, so every check sees the values the
    command runs with. The group builds them before any command without flags of its own."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    settings: Settings | None = obj.get("settings")
    if settings is not None:
        if any(value is not None for value in flags.values()):
            raise RuntimeError("the settings were built before this command's flags were in: "
                               "name the command in tuneloop.cli.OWN_SETTINGS_FLAGS")
        return settings
    config_file = flags.pop("config_file", None) or obj.get("config_file")
    db = flags.pop("db", None) or obj.get("db")
    settings = obj["settings"] = load_settings(config_file, db=db, **flags)
    return settings


def admin_token(settings: Settings) -> str | None:
    """The admin token from the environment or config, else the one `serve` wrote beside the
    database, else the reviewer token."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    if settings.admin_token_file.is_file():
        return settings.admin_token_file.read_text().strip() or None
    if settings.reviewer_token is not None:
        return settings.reviewer_token.get_secret_value()
    return None


def make_client(ctx: click.Context, api: str | None) -> AdminClient:
    settings = settings_from(ctx)
    return AdminClient(api or settings.api, admin_token(settings), actor="cli")


api_option = click.option("--api", default=None, help="Admin API base URL "
                          "[env TUNELOOP_API; default http://127.0.0.1:4000].")
