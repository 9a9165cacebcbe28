"""`tuneloop promote` and `tuneloop rollback`: move an alias's traffic to a model (a canary
share or all of it) and back, through the admin API (admin token only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuneloop.commands.common import api_option, domain_errors, make_client


def describe_route(spec: dict[str, Any]) -> str:
    total = sum(float(t.get("weight", 100.0)) for t in spec["targets"]) or 1.0
    parts = [f"{t['model']} {100 * float(t.get('weight', 100.0)) / total:g}%"
             for t in spec["targets"]]
    text = ", ".join(parts)
    if spec.get("fallbacks"):
        text += "; fallbacks: " + ", ".join(t["model"] for t in spec["fallbacks"])
    return text


def describe_verdict(verdict: dict[str, Any]) -> str:
    """A canary test's verdict as recorded in the route history, on one line per test."""
    lines = [f"verdict {verdict.get('verdict')} ({verdict.get('test', 'sprt')})"]
    for test in verdict.get("tests", []):
        lines.append(
            f"  {test['metric']}: canary {test['canary_events']}/{test['canary_n']}, current "
            f"{test['baseline_events']}/{test['baseline_n']}; H0 p={test['p0']:.4f} H1 "
            f"p={test['p1']:.4f}; LLR {test['llr']:+.3f} in [{test['lower']:.3f}, "
            f"{test['upper']:.3f}]: {test['decision']}")
    return "\n".join(lines)


def describe_change(item: dict[str, Any]) -> str:
    """One route history entry (GET /admin/routes/history) for people."""
    detail = item.get("detail") or {}
    head = f"#{item['seq']} {item['changed_at']} {item['action']} by {item.get('changed_by')}"
    if item["action"] == "promote":
        head += f": {detail.get('model')} at {detail.get('canary', 100):g}%"
    elif item["action"] == "rollback":
        head += f": undid {detail.get('model')} (#{detail.get('undoes')})"
    if item.get("spec"):
        head += f" -> {describe_route(item['spec'])}"
    verdict = detail.get("verdict")
    return head if not isinstance(verdict, dict) else f"{head}\n  {describe_verdict(verdict)}"


def legacy_markers(export_dir: Path) -> tuple[str | None, str | None]:
    """The prompt separator and stop sequence of a legacy-format export, else (None, None)."""
    from exporter.exportdir import load_export

    manifest = load_export(export_dir, verify=False).manifest
    if manifest.get("format") not in ("legacy", "classification"):
        return None, None
    return manifest.get("prompt_separator"), manifest.get("stop")


@click.command("promote")
@click.option("--alias", required=True, help="The alias apps send as their model.")
@click.option("--model", required=True, help="The model to promote (e.g. ft:...).")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True), default=100.0,
              show_default=True, help="Percent of the alias's traffic; 100 promotes fully.")
@click.option("--provider", default=None, help="Provider of the model [default openai].")
@click.option("--base-url", default=None, help="OpenAI-compatible server of the model.")
@click.option("--api-key-env", default=None, help="Variable holding the model's key.")
@click.option("--prompt-suffix", default=None,
              help="Legacy-format models: the separator the proxy appends to prompts.")
@click.option("--stop", default=None, help="Legacy-format models: the stop sequence.")
@click.option("--from-export", "export_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Take --prompt-suffix and --stop from a legacy export.")
@click.option("--keep-fallbacks/--drop-fallbacks", default=True, show_default=True)
@click.option("--previous-as-fallback/--no-previous-fallback", default=True, show_default=True,
              help="On a full promotion, keep the previous target as the first fallback.")
@api_option
@click.pass_context
@domain_errors
def promote(ctx: click.Context, alias: str, model: str, canary: float, provider: str | None,
            base_url: str | None, api_key_env: str | None, prompt_suffix: str | None,
            stop: str | None, export_dir: Path | None, keep_fallbacks: bool,
            previous_as_fallback: bool, api: str | None) -> None:
    """Route a canary share (or all) of an alias's traffic to a model."""
    suffix, stop_sequence = prompt_suffix, stop
    if export_dir is not None:
        separator, export_stop = legacy_markers(export_dir)
        suffix, stop_sequence = suffix or separator, stop_sequence or export_stop
    with make_client(ctx, api) as client:
        result = client.promote(
            alias, model, canary=canary, provider=provider, base_url=base_url,
            api_key_env=api_key_env, prompt_suffix=suffix, stop=stop_sequence,
            keep_fallbacks=keep_fallbacks, previous_as_fallback=previous_as_fallback)
    kind = "fully" if canary >= 100 else f"as a {canary:g}% canary"
    click.echo(f"promoted {model} {kind} on {alias}: {describe_route(result['spec'])}")


@click.command("rollback")
@click.option("--alias", required=True, help="The alias to roll back.")
@click.option("--json", "as_json", is_flag=True, help="Print the restored route as JSON.")
@api_option
@click.pass_context
@domain_errors
def rollback(ctx: click.Context, alias: str, as_json: bool, api: str | None) -> None:
    """Restore the alias's route from before its latest promotion."""
    with make_client(ctx, api) as client:
        result = client.rollback(alias)
    if as_json:
        click.echo(json.dumps(result["spec"], indent=2))
    else:
        click.echo(f"rolled back {result['model']} on {alias}: {describe_route(result['spec'])}")
