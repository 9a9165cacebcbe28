"""`tuneloop finetune` (start a job on an export directory) and `tuneloop jobs list | show |
follow | results | cancel`. `--provider openai|together|fireworks|azure` picks the trainer
(keys from their usual variables, base URLs from the settings); a recorded job is followed at
the provider it was started at. Every job and what happens to it is recorded through the
admin API."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from shlex import quote
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tuneloop.commands.common import canary_share

api_option = click.option("--api", default=None,
                          help="Admin API base URL [env TUNELOOP_API].")
PROVIDERS = ("openai", "together", "fireworks", "azure")
provider_option = click.option(
    "--provider", type=click.Choice(PROVIDERS), default=None,
    help="Fine-tuning provider [default: openai; for a recorded job, the one it ran at].")
poll_option = click.option("--poll", type=float, default=2.0, show_default=True,
                           help="Seconds between status checks while following.")


def _backoff(poll: float) -> Any:
    from exporter.providers.follow import Backoff

    poll = max(poll, 0.01)
    return Backoff(poll=poll, idle_max=max(poll, min(30.0, 15 * poll)), initial=min(1.0, poll))


def _run(ctx: click.Context, api: str | None, body: Callable[[Any], None]) -> None:
    from tuneloop.commands.common import domain_errors, make_client

    @domain_errors
    def run() -> None:
        with make_client(ctx, api) as client:
            body(client)

    run()


def _provider(ctx: click.Context, name: str | None, record: dict[str, Any] | None = None) -> Any:
    """The provider `name`, else the one the recorded job ran at, else OpenAI."""
    from exporter.providers.registry import provider_of
    from tuneloop.commands.common import settings_from

    return provider_of(record or {}, settings_from(ctx), name)


def _follow(ctx: click.Context, client: Any, job_id: str, poll: float,
            provider: str | None) -> dict[str, Any]:
    from exporter.finetune import wait_for_job
    from exporter.providers.display import RichFollowDisplay

    chosen = _provider(ctx, provider, client.job(job_id))
    try:
        with RichFollowDisplay(job_id) as display:
            record: dict[str, Any] = wait_for_job(client, job_id, chosen,
                                                  observer=display, backoff=_backoff(poll))
    except KeyboardInterrupt:
        Console(stderr=True).print(
            f"stopped following {job_id}; the job goes on at the provider. Re-attach with "
            f"`tuneloop jobs follow {job_id}`", highlight=False)
        raise SystemExit(130) from None
    return record


def _finish(record: dict[str, Any]) -> None:
    from exporter.finetune import raise_for_status

    click.echo(f"{record['id']} {record['status']}"
               + (f": {record['fine_tuned_model']}" if record.get("fine_tuned_model") else ""))
    if record.get("curves"):
        _print_curves(record["curves"])
    if record["status"] == "succeeded" and record.get("provider") not in (None, "openai"):
        Console(stderr=True).print(
            f"the model is served by {record['provider']}, not the default upstream: route it "
            f"with `tuneloop jobs serve {record['id']} --promote ALIAS`", highlight=False)
    raise_for_status(record)


@click.command("finetune")
@click.option("--dataset", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Export directory made by `tuneloop export`.")
@click.option("--base-model", required=True, help="e.g. gpt-4o-mini-2024-07-18")
@click.option("--method", type=click.Choice(["sft", "dpo"]), default=None,
              help="[default: dpo for preference datasets, else sft]")
@click.option("--suffix", default=None, help="Up to 64 characters in the model name.")
@click.option("--seed", type=int, default=None)
@click.option("--epochs", type=int, default=None, help="[default: auto]")
@click.option("--batch-size", type=int, default=None, help="[default: auto]")
@click.option("--lr-multiplier", type=float, default=None, help="[default: auto]")
@click.option("--beta", type=float, default=None, help="DPO beta [default: auto]")
@click.option("--wait", is_flag=True, help="Follow the job to its end, then store its results.")
@provider_option
@poll_option
@api_option
@click.pass_context
def finetune(ctx: click.Context, dataset: Path, base_model: str, method: str | None,
             suffix: str | None, seed: int | None, epochs: int | None, batch_size: int | None,
             lr_multiplier: float | None, beta: float | None, wait: bool,
             provider: str | None, poll: float, api: str | None) -> None:
    """Upload an export directory and start a fine-tuning job (admin token only)."""
    from exporter.exportdir import load_export
    from exporter.finetune import job_spec, start_job

    def body(client: Any) -> None:
        spec = job_spec(load_export(dataset, verify=False), base_model, method=method,
                        suffix=suffix, seed=seed, epochs=epochs, batch_size=batch_size,
                        lr_multiplier=lr_multiplier, beta=beta)
        record = start_job(client, dataset, spec, _provider(ctx, provider))
        click.echo(record["id"])
        Console(stderr=True).print(
            f"started {record['id']} ({record['method']} on {record['base_model']}); follow it "
            f"with `tuneloop jobs follow {record['id']}`", highlight=False)
        if wait:
            _finish(_follow(ctx, client, record["id"], poll, provider))

    _run(ctx, api, body)


@click.group("jobs")
def jobs() -> None:
    """Fine-tuning jobs: list, follow, results, cancel."""


@jobs.command("list")
@click.option("--status", default=None, help="Only jobs in this state.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--refresh", is_flag=True, help="Ask the provider for unfinished jobs' states.")
@click.option("--json", "as_json", is_flag=True)
@api_option
@click.pass_context
def jobs_list(ctx: click.Context, status: str | None, limit: int, refresh: bool,
              as_json: bool, api: str | None) -> None:
    """The recorded jobs, newest first (each refreshed at the provider it runs at; a provider
    that cannot be reached, e.g. without its key, is skipped and named, the rest refreshed)."""

    def body(client: Any) -> None:
        found = client.jobs(status=status, limit=limit)["jobs"]
        if refresh:
            found, skipped = _refreshed(ctx, client, found)
            for line in skipped:
                Console(stderr=True).print(line, highlight=False, markup=False)
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return
        rows = [(job["id"], job["status"], job["base_model"], job["fine_tuned_model"] or "",
                 job["dataset_id"] or "", job["created_at"], job.get("provider") or "")
                for job in found]
        click.echo(plain_table(("id", "status", "base model", "fine-tuned model", "dataset",
                                "created", "provider"), rows))

    _run(ctx, api, body)


def _refreshed(ctx: click.Context, client: Any, found: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """The unfinished jobs refreshed at their providers, and a line per provider that could
    not be built (a missing key or account) or job that could not be refreshed."""
    from exporter.finetune import refresh_job
    from exporter.providers.base import TERMINAL
    from tuneloop.errors import ConfigError, ProviderError

    providers: dict[str, Any] = {}
    refused: dict[str, tuple[str, list[str]]] = {}
    problems: list[str] = []
    out = []
    for job in found:
        name = str(job.get("provider") or "openai")
        if job["status"] in TERMINAL:
            out.append(job)
            continue
        if name not in providers and name not in refused:
            try:
                providers[name] = _provider(ctx, None, job)
            except ConfigError as exc:
                refused[name] = (exc.message, [])
        if name in refused:
            refused[name][1].append(job["id"])
            out.append(job)
            continue
        try:
            out.append(refresh_job(client, job["id"], providers[name]))
        except ProviderError as exc:
            problems.append(f"not refreshed: job {job['id']} at {name}: {exc.message}")
            out.append(job)
    lines = [f"skipped {name} ({len(ids)} unfinished job{'s' * (len(ids) != 1)}: "
             f"{', '.join(ids)}; shown as last recorded): {why}"
             for name, (why, ids) in refused.items()]
    return out, lines + problems


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest value, never cut or wrapped inside a value: ids and
    model names are copied from here into other commands."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [headers, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


@jobs.command("show")
@click.argument("job_id")
@api_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, api: str | None) -> None:
    """A recorded job as JSON."""
    _run(ctx, api, lambda client: click.echo(json.dumps(client.job(job_id), indent=2)))


@jobs.command("follow")
@click.argument("job_id")
@provider_option
@poll_option
@api_option
@click.pass_context
def jobs_follow(ctx: click.Context, job_id: str, provider: str | None, poll: float,
                api: str | None) -> None:
    """Show a job's events until it ends, resuming after the last event shown before (by
    any process); exits non-zero if the job fails or is cancelled."""
    _run(ctx, api, lambda client: _finish(_follow(ctx, client, job_id, poll, provider)))


@jobs.command("results")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics per step as JSON.")
@provider_option
@api_option
@click.pass_context
def jobs_results(ctx: click.Context, job_id: str, as_json: bool, provider: str | None,
                 api: str | None) -> None:
    """Fetch a finished job's metrics (loss curves), store and print them."""
    from exporter.finetune import refresh_job, store_results

    def body(client: Any) -> None:
        chosen = _provider(ctx, provider, client.job(job_id))
        record = refresh_job(client, job_id, chosen)
        curves = store_results(client, job_id, chosen)
        if as_json:
            click.echo(json.dumps({"job": client.job(job_id), "curves": curves.to_json()}))
            return
        click.echo(f"{record['id']} {record['status']}: {record['fine_tuned_model'] or '-'}")
        _print_curves(curves.to_json())

    _run(ctx, api, body)


@jobs.command("serve")
@click.argument("job_id")
@click.option("--promote", "alias", default=None,
              help="Route the model on this alias (admin token).")
@click.option("--canary", type=float, default=100.0,
              callback=canary_share,
              show_default=True, help="With --promote: the model's share of the alias.")
@provider_option
@api_option
@click.pass_context
def jobs_serve(ctx: click.Context, job_id: str, alias: str | None, canary: float,
               provider: str | None, api: str | None) -> None:
    """Make a succeeded job's model servable (Fireworks: load the LoRA) and print the route
    target that reaches it; --promote routes it."""
    def body(client: Any) -> None:
        chosen = _provider(ctx, provider, client.job(job_id))
        job = chosen.retrieve(job_id)
        deploy = getattr(chosen, "deploy", None)
        if deploy is None:  # OpenAI: the default upstream serves its fine-tunes
            from exporter.providers.serving import ServedModel, no_model_yet
            from tuneloop.errors import DatasetError

            served = ServedModel(job.fine_tuned_model or "", None, None)
            if job.status != "succeeded":
                raise DatasetError(no_model_yet(job))  # as the other providers
        else:
            served = deploy(job)
        where = served.base_url or "the default upstream"
        click.echo(f"{served.model} at {where}"
                   + (f" with the key in {served.api_key_env}" if served.api_key_env else ""))
        if alias is None:
            flags = "".join(f" --{k.replace('_', '-')} {quote(v)}"
                            for k, v in served.promote_args().items()
                            if v and not (k == "provider" and v == "openai"))
            click.echo(f"route it: tuneloop promote --alias ALIAS --model {served.model}{flags}")
            return
        result = client.promote(alias, served.model, canary=canary, **served.promote_args())
        kind = "fully" if canary >= 100 else f"as a {canary:g}% canary"
        click.echo(f"promoted {served.model} {kind} on {alias}")
        for keyless in result.get("warnings", []):
            click.echo(f"warning: {keyless}", err=True)

    _run(ctx, api, body)


@jobs.command("cancel")
@click.argument("job_id")
@provider_option
@api_option
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: str, provider: str | None, api: str | None) -> None:
    """Cancel a running job (admin token only)."""
    from exporter.finetune import cancel_job

    def body(client: Any) -> None:
        known = client.job(job_id)
        already = known.get("status") == "cancelled"  # no provider call (nor its settings)
        record = cancel_job(client, job_id, None if already else _provider(ctx, provider, known))
        click.echo(f"{job_id} was already cancelled: nothing to do" if already
                   else f"{record['id']} {record['status']}")

    _run(ctx, api, body)


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def _print_curves(curves: dict[str, Any], rows: int = 20) -> None:
    """Final and best losses, and the curve at up to `rows` evenly spaced steps."""
    steps, train, valid = curves["steps"], curves["train_loss"], curves["valid_loss"]
    if not steps:
        click.echo("no metrics in the result file")
        return
    known = [(v, s) for s, v in zip(steps, valid, strict=True) if v is not None]
    best = f", best validation loss {min(known)[0]:.4f} at step {min(known)[1]}" if known else ""
    click.echo(f"{len(steps)} steps; final training loss {_number(train[-1])}"
               + (f", final validation loss {_number(known[-1][0])}" if known else "") + best)
    picks = sorted({round(i * (len(steps) - 1) / max(rows - 1, 1)) for i in range(rows)})
    table = Table("step", "train loss", "valid loss")
    for index in picks:
        table.add_row(str(steps[index]), _number(train[index]), _number(valid[index]))
    Console().print(table)
