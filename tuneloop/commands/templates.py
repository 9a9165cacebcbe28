"""`tuneloop templates`: the prompt parts an alias's traffic shares (candidate templates), freezing
one as a versioned template, and the frozen ones, through the admin API."""

from __future__ import annotations

import json
from typing import Any

import click

from tuneloop.commands.common import api_option, domain_errors, make_client
from tuneloop.errors import BadRequest

PREVIEW = 60


def _preview(text: str) -> str:
    shown = text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"
    return json.dumps(shown, ensure_ascii=False)


def describe_parts(parts: dict[str, Any], part_tokens: dict[str, int] | None = None) -> list[str]:
    tokens = part_tokens or {}

    def count(key: str) -> str:
        return f" ({tokens[key]} tokens)" if key in tokens else ""

    lines = []
    if parts.get("system_prompt"):
        lines.append(f"system prompt{count('system_prompt')}: {_preview(parts['system_prompt'])}")
    if parts.get("few_shot"):
        lines.append(f"few-shot turns: {len(parts['few_shot'])}{count('few_shot')}")
    for key, label in (("user_prefix", "user prefix"), ("user_suffix", "user suffix"),
                       ("prompt_prefix", "prompt prefix"), ("prompt_suffix", "prompt suffix")):
        if parts.get(key):
            lines.append(f"{label}{count(key)}: {_preview(parts[key])}")
    return lines


def _print_candidates(found: dict[str, Any]) -> None:
    sample = found["sample"]
    click.echo(f"{found['alias']}: {sample['chat']} chat and {sample['legacy']} legacy requests "
               f"sampled, parts shared by >= {100 * found['threshold']:g}% "
               f"(tokens: {found['tokenizer_model']})")
    read = found.get("read") or {}
    if read.get("over_budget") or read.get("too_large"):
        click.echo(f"note: {read.get('over_budget', 0)} older requests left out (over the "
                   f"{read.get('max_bytes', 0) // 2**20} MiB read budget), "
                   f"{read.get('too_large', 0)} over 1 MiB each")
    left_out = read.get("unreadable", 0) + read.get("skipped", 0)
    if left_out:
        click.echo(f"note: {left_out} requests left out (not JSON, a malformed message list, or "
                   "a batched or token-id prompt)")
    if not found["candidates"]:
        click.echo("no shared prompt parts found")
    for candidate in found["candidates"]:
        click.echo(f"[{candidate['index']}] {candidate['kind']}: matches "
                   f"{100 * candidate['share']:.1f}% ({candidate['matched']}), "
                   f"{candidate['tokens']} tokens per request; id {candidate['id']}")
        for line in describe_parts(candidate["parts"], candidate["part_tokens"]):
            click.echo(f"    {line}")


def _print_frozen(items: list[dict[str, Any]]) -> None:
    if not items:
        click.echo("no frozen templates")
    for item in items:
        share = f", matched {100 * item['share']:.1f}%" if item.get("share") is not None else ""
        tokens = f", {item['tokens']} tokens" if item.get("tokens") is not None else ""
        click.echo(f"{item['ref']} (alias {item.get('alias') or '-'}{share}{tokens}; frozen "
                   f"{item['created_at']} by {item.get('created_by') or '-'})")
        for line in describe_parts(item["parts"]):
            click.echo(f"    {line}")


@click.command("templates")
@click.option("--alias", default=None, help="An alias (or model name) whose traffic to read.")
@click.option("--limit", type=click.IntRange(1, 5_000), default=None,
              help="Newest production requests to sample  [default: 2000].")
@click.option("--threshold", type=click.FloatRange(0.5, 1.0), default=None,
              help="Share of requests a part must be in  [default: 0.8].")
@click.option("--max-bytes", type=click.IntRange(1, 64 * 2**20), default=None,
              help="Request bytes discovery may read, newest first  [default: 16 MiB].")
@click.option("--freeze", "freeze_name", default=None, metavar="NAME",
              help="Freeze a candidate as the next version of NAME (admin token).")
@click.option("--candidate", default=None, metavar="ID",
              help="The id of the candidate --freeze takes, as listed (it is frozen only if "
                   "discovery still offers exactly it).")
@click.option("--show", "show_ref", default=None, metavar="REF",
              help="Print one frozen template (NAME-vN, or NAME for the newest) as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@api_option
@click.pass_context
@domain_errors
def templates(ctx: click.Context, alias: str | None, limit: int | None, threshold: float | None,
              max_bytes: int | None,
              freeze_name: str | None, candidate: str | None, show_ref: str | None, as_json: bool,
              api: str | None) -> None:
    """Templates from traffic: with --alias, the prompt parts most of its requests share (and
    the templates frozen for it); --freeze NAME stores one; with neither, every frozen one."""
    with make_client(ctx, api) as client:
        if show_ref is not None:
            click.echo(json.dumps(client.template(show_ref), indent=2, ensure_ascii=False))
            return
        if alias is None:
            if freeze_name is not None:
                raise BadRequest("--freeze needs --alias (whose candidates to freeze from)")
            items = client.templates()
            click.echo(json.dumps(items, indent=2)) if as_json else _print_frozen(items)
            return
        if freeze_name is None:
            found = client.template_candidates(alias, limit=limit, threshold=threshold,
                                               max_bytes=max_bytes)
            if as_json:
                click.echo(json.dumps(found, indent=2, ensure_ascii=False))
                return
            _print_candidates(found)
            frozen = client.templates(alias)
            if frozen:
                click.echo("\nfrozen:")
                _print_frozen(frozen)
            return
        if candidate is None:
            raise BadRequest("--freeze needs --candidate ID (the id listed by `tuneloop "
                             f"templates --alias {alias}`)", param="candidate")
        item = client.freeze_template(freeze_name, alias=alias, candidate=candidate,
                                      limit=limit, threshold=threshold, max_bytes=max_bytes)
    if as_json:
        click.echo(json.dumps(item, indent=2, ensure_ascii=False))
    else:
        click.echo(f"froze {item['ref']} from candidate {candidate} of {alias}")
        for line in describe_parts(item["parts"]):
            click.echo(f"    {line}")
