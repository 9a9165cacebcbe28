"""`tuneloop export` (build a dataset snapshot into an export directory) and `tuneloop
datasets list | show | trace` (the recorded snapshots)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console
from rich.table import Table

from tuneloop.errors import DatasetError

FORMAT_CHOICES = ("chat", "legacy", "preference", "classification")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(value: str | None) -> str | None:
    r"""`\n`, `\t`, `\r` and `\\` as typed on a command line become the characters."""
    if value is None:
        return None
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], value)


@click.command("export")
@click.option("--name", required=True, help="Dataset name (its snapshots are versioned).")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="chat",
              show_default=True)
@click.option("--validation", type=float, default=0.1, show_default=True,
              help="Fraction of examples for the validation file.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Export directory to create (train.jsonl, validation.jsonl, manifest.json).")
@click.option("--base-model", default=None,
              help="Model to fine-tune: token limits, encoding and cost estimate [default: "
                   "gpt-4o-mini-2024-07-18 for chat and preference, davinci-002 for legacy, "
                   "babbage-002 for classification].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--separator", default=None,
              help=r"Prompt separator for legacy/classification [default \n\n###\n\n].")
@click.option("--stop", default=None, help="Completion stop sequence [legacy default ###].")
@click.option("--labels", default=None, help="Classification: the label set, comma-separated.")
@click.option("--positive-class", default=None, help="Classification: the positive label.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Which interactions (repeatable): review=approved (default), tag=, model=, "
                   "since=, until=, user=, session=, q=, min_score=, traffic=, endpoint=, "
                   "label_prefix= (default label:), label_field= (a metadata key), "
                   "max_examples=.")
@click.option("--include-legacy", is_flag=True,
              help="chat/preference: also take legacy /v1/completions interactions (left "
                   "out by default: their prompt is raw text, not a conversation).")
@click.option("--skip-invalid", is_flag=True,
              help="Leave out examples that break a rule instead of stopping; they are "
                   "counted and listed in the report.")
@click.option("--workers", type=int, default=None, help="Processes [default: every core].")
@click.option("--overwrite", is_flag=True, help="Replace an existing export directory.")
@click.option("--strip-template", default=None, metavar="NAME[-vN]",
              help="Leave this frozen prompt template (`tuneloop templates`) out of every "
                   "example; examples without it are skipped with a warning.")
@click.option("--system-prompt", default=None, metavar="TEXT",
              help="With --strip-template: a short system prompt in the template's place.")
@click.option("--api", default=None, help="Admin API base URL [env TUNELOOP_API].")
@click.pass_context
def export_command(ctx: click.Context, name: str, fmt: str, validation: float, out: Path,
                   base_model: str | None, seed: int, separator: str | None, stop: str | None,
                   labels: str | None, positive_class: str | None, filters: tuple[str, ...],
                   include_legacy: bool, skip_invalid: bool,
                   workers: int | None, overwrite: bool, strip_template: str | None,
                   system_prompt: str | None, api: str | None) -> None:
    """Export the approved examples (or those --filter selects) as validated fine-tuning
    data, and record the snapshot. A dataset that fails validation prints its report,
    writes nothing and exits non-zero."""
    from tuneloop.commands.common import domain_errors

    domain_errors(_export)(ctx, name=name, fmt=fmt, validation=validation, out=out,
                           base_model=base_model, seed=seed, separator=separator, stop=stop,
                           labels=labels, positive_class=positive_class, filters=filters,
                           include_legacy=include_legacy, skip_invalid=skip_invalid,
                           workers=workers, overwrite=overwrite, strip_template=strip_template,
                           system_prompt=system_prompt, api=api)


def _export(ctx: click.Context, *, name: str, fmt: str, validation: float, out: Path,
            base_model: str | None, seed: int, separator: str | None, stop: str | None,
            labels: str | None, positive_class: str | None, filters: tuple[str, ...],
            include_legacy: bool, skip_invalid: bool,
            workers: int | None, overwrite: bool, strip_template: str | None,
            system_prompt: str | None, api: str | None) -> None:
    from exporter.datasets import build_dataset, parse_filters
    from exporter.fix_hints import how_to_fix
    from exporter.formats import DEFAULT_SEPARATOR, FormatName, FormatOptions, RuleViolations
    from exporter.pipeline import DatasetRejected, ExportOptions
    from exporter.strip import TemplateStrip
    from exporter.tokens import default_base_model
    from tuneloop.commands.common import make_client
    from tuneloop.names import dataset_name

    dataset_name(name, "--name")
    if system_prompt is not None and strip_template is None:
        raise DatasetError("--system-prompt replaces a stripped template's system prompt: "
                           "give --strip-template too", param="system_prompt")
    if fmt in ("preference", "classification") and strip_template is not None:
        raise DatasetError("--strip-template works with the chat and legacy formats",
                           param="strip_template")
    label_set = tuple(x.strip() for x in labels.split(",") if x.strip()) if labels else None
    options = ExportOptions(
        name=name,
        format=FormatOptions(cast(FormatName, fmt),
                             separator=unescape(separator) or DEFAULT_SEPARATOR,
                             stop=unescape(stop), labels=label_set,
                             positive_class=positive_class),
        base_model=base_model or default_base_model(fmt), validation_fraction=validation,
        seed=seed, workers=workers, filter=parse_filters(filters), overwrite=overwrite,
        include_legacy=include_legacy, skip_invalid=skip_invalid,
    )
    with make_client(ctx, api) as client:
        if strip_template is not None:
            template = client.prompt_template(strip_template)
            options = dataclasses.replace(
                options, strip=TemplateStrip(template, unescape(system_prompt)))
            click.echo(f"stripping prompt template {template.ref}", err=True)
        try:
            result = build_dataset(client, out, options)
        except DatasetRejected as exc:
            click.echo(exc.report.render())
            hint = how_to_fix(exc.problems)
            raise DatasetError(f"the dataset fails validation ({len(exc.report.errors)} "
                               "error(s), see the report above); nothing was written"
                               + (f"\n{hint}" if hint else "")) from exc
        except RuleViolations as exc:
            hint = how_to_fix(exc.problems)
            raise DatasetError(f"{exc.message}; nothing was written"
                               + (f"\n{hint}" if hint else "")) from exc
    click.echo(result.report.render())
    snapshot, counts = result.manifest["snapshot"], result.manifest["counts"]
    click.echo(f"dataset {snapshot['name']} version {snapshot['version']} ({snapshot['id']}): "
               f"{counts['train']} train, {counts['validation']} validation lines in {out}",
               err=True)


@click.group("datasets")
def datasets() -> None:
    """Recorded dataset snapshots (made by `tuneloop export`)."""


def _client(ctx: click.Context, api: str | None) -> Any:
    from tuneloop.commands.common import make_client

    return make_client(ctx, api)


@datasets.command("list")
@click.option("--api", default=None, help="Admin API base URL [env TUNELOOP_API].")
@click.pass_context
def datasets_list(ctx: click.Context, api: str | None) -> None:
    """Dataset names, their number of versions and the latest."""
    from tuneloop.commands.common import domain_errors

    @domain_errors
    def run() -> None:
        with _client(ctx, api) as client:
            found = client.datasets()["datasets"]
        table = Table("name", "versions", "latest", "updated")
        for row in found:
            table.add_row(row["name"], str(row["versions"]), str(row["latest_version"]),
                          row["updated_at"])
        Console().print(table)

    run()


@datasets.command("show")
@click.argument("name")
@click.argument("version", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--api", default=None, help="Admin API base URL [env TUNELOOP_API].")
@click.pass_context
def datasets_show(ctx: click.Context, name: str, version: int | None, as_json: bool,
                  api: str | None) -> None:
    """A dataset's versions, or one version's counts and validation report."""
    from exporter.report import ValidationReport
    from tuneloop.commands.common import domain_errors

    @domain_errors
    def run() -> None:
        with _client(ctx, api) as client:
            if version is None:
                found: dict[str, Any] = client.dataset_versions(name)
            else:
                found = client.dataset(name, version)
        if as_json:
            click.echo(json.dumps(found, indent=2))
        elif version is None:
            table = Table("version", "id", "format", "train", "validation", "skipped",
                          "created", "by")
            for row in found["versions"]:
                counts = row["counts"]
                table.add_row(str(row["version"]), row["id"], row["format"],
                              *(str(counts.get(k, 0)) for k in ("train", "validation",
                                                                 "skipped")),
                              row["created_at"], row["created_by"] or "")
            Console().print(table)
        else:
            click.echo(f"{found['name']} version {found['version']} ({found['id']}), "
                       f"{found['format']}, filter {json.dumps(found['filter'])}, "
                       f"path {found['path']}")
            if found.get("report"):
                click.echo(ValidationReport.from_json(found["report"]).render())

    run()


@datasets.command("trace")
@click.argument("name")
@click.argument("split", type=click.Choice(["train", "validation"]))
@click.argument("line", type=int)
@click.option("--version", type=int, default=None, help="Version [default: the latest].")
@click.option("--api", default=None, help="Admin API base URL [env TUNELOOP_API].")
@click.pass_context
def datasets_trace(ctx: click.Context, name: str, split: str, line: int, version: int | None,
                   api: str | None) -> None:
    """Which interaction and revision line LINE of SPLIT came from."""
    from tuneloop.commands.common import domain_errors

    @domain_errors
    def run() -> None:
        with _client(ctx, api) as client:
            click.echo(json.dumps(client.trace(name, split, line, version=version), indent=2))

    run()
