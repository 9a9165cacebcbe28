"""`tuneloop promote` and `tuneloop rollback`: move an alias's traffic to a model (a canary
share or all of it) and back, through the admin API (admin token only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuneloop.client import AdminClient
from tuneloop.commands.common import api_option, canary_share, domain_errors, make_client
from tuneloop.request_transforms import describe


def describe_transforms(target: dict[str, Any]) -> str:
    """A target's transforms in brackets (`` [strip support-bot-v1, stop]``), or nothing."""
    text = describe(target.get("transforms"))
    return f" [{text}]" if text else ""


def describe_route(spec: dict[str, Any]) -> str:
    total = sum(float(t.get("weight", 100.0)) for t in spec["targets"]) or 1.0
    parts = [f"{t['model']} {100 * float(t.get('weight', 100.0)) / total:g}%"
             f"{describe_transforms(t)}" for t in spec["targets"]]
    text = ", ".join(parts)
    if spec.get("fallbacks"):
        text += "; fallbacks: " + ", ".join(t["model"] for t in spec["fallbacks"])
    return text


def describe_verdict(verdict: dict[str, Any]) -> str:
    """A canary test's verdict as recorded in the route history, on one line per test."""
    lines = [f"verdict {verdict.get('verdict')} ({verdict.get('test', 'sprt')})"]
    for test in verdict.get("tests", []):
        if "llr_bad" in test:  # the two-sample test: one statistic per boundary
            llr = (f"LLR worse {test['llr']:+.3f} (rolls back at {test['upper']:.3f}), LLR bad "
                   f"{test['llr_bad']:+.3f} (no worse at {test['lower']:.3f})")
        else:
            llr = f"LLR {test['llr']:+.3f} in [{test['lower']:.3f}, {test['upper']:.3f}]"
        before = " before the canary" if test.get("baseline") == "history" else ""
        if test.get("baseline_unjudged"):  # exporter/canary_history.py: for a rollback only
            before += f" (+{test['baseline_unjudged']:g} unjudged failures for a rollback)"
        lines.append(
            f"  {test['metric']}: canary {test['canary_events']:g}/{test['canary_n']:g}, "
            f"current {test['baseline_events']:g}/{test['baseline_n']:g}{before}; H0 p="
            f"{test['p0']:.4f} H1 p={test['p1']:.4f}; {llr}: {test['decision']}")
    lines += [f"  why: {reason}" for reason in verdict.get("reasons", [])
              if not reason.startswith(("errors ", "thumbs_down "))]  # the tests' own lines
    return "\n".join(lines)


def describe_change(item: dict[str, Any]) -> str:
    """One route history entry (GET /admin/routes/history) for people."""
    detail = item.get("detail") or {}
    head = f"#{item['seq']} {item['changed_at']} {item['action']} by {item.get('changed_by')}"
    if item["action"] == "promote":
        head += f": {detail.get('model')} at {detail.get('canary', 100):g}%"
    elif item["action"] == "rollback":
        head += f": undid {detail.get('model')} (#{detail.get('undoes')})"
        if detail.get("rebuilt"):
            head += ", taken out of the route as changed since"
        elif detail.get("forced"):
            head += ", forced over changes since"
    if item.get("spec"):
        head += f" -> {describe_route(item['spec'])}"
    verdict = detail.get("verdict")
    return head if not isinstance(verdict, dict) else f"{head}\n  {describe_verdict(verdict)}"


def export_transforms(export_dir: Path) -> dict[str, str | None]:
    """What the model trained on an export must get: the prompt separator and stop sequence
    of a legacy-format export, and the template it was exported without (with its
    replacement system prompt)."""
    from exporter.exportdir import load_export

    manifest = load_export(export_dir, verify=False).manifest
    found: dict[str, str | None] = {}
    if manifest.get("format") in ("legacy", "classification"):
        found["prompt_suffix"] = manifest.get("prompt_separator")
        found["stop"] = manifest.get("stop")
    template = manifest.get("template")
    if isinstance(template, dict) and isinstance(template.get("ref"), str):
        found["strip_template"] = template["ref"]
        found["system_prompt"] = template.get("replacement_system_prompt")
    return found


DROP_CHOICES = {"strip-template": "strip_template", "system-prompt": "replace_system_prompt",
                "prompt-suffix": "legacy_separator", "stop": "stop"}
GIVEN_TYPE = {"strip_template": "strip_template", "system_prompt": "replace_system_prompt",
              "prompt_suffix": "legacy_separator", "stop": "stop"}


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 4] + '..."'


def describe_values(transforms: list[dict[str, Any]]) -> str:
    """Each transform with its value: `strip qa-v1, separator "\\n###\\n", stop " END"`."""
    parts = []
    for t in transforms:
        kind = t.get("type")
        if kind == "strip_template":
            parts.append(f"strip {t.get('template')}")
        elif kind == "replace_system_prompt":
            parts.append(f"system prompt {_short(t.get('system_prompt'))}")
        elif kind == "legacy_separator":
            parts.append(f"separator {_short(t.get('separator'))}")
        else:
            parts.append(f"{kind} {_short(t.get(str(kind)))}")
    return ", ".join(parts)


def candidate_transforms_line(spec: dict[str, Any], model: str, named: set[str]) -> str:
    """What the promoted model gets now, and which of it was kept from the route."""
    target = next((t for t in spec.get("targets", []) if t.get("model") == model), None)
    transforms = list((target or {}).get("transforms") or [])
    if not transforms:
        return f"{model} transforms: none (it gets the app's request as sent)"
    kept = [t for t in transforms if t.get("type") not in named]
    line = f"{model} transforms: {describe_values(transforms)}"
    if kept:
        line += (f" (kept from the route: {describe(kept)}; --drop-transform TYPE or "
                 "--no-transforms removes them)")
    return line


def replaced_own_system_warning(client: AdminClient, spec: dict[str, Any], model: str
                                ) -> str | None:
    """A warning when the model gets a replacement system prompt beside a stripped chat
    template without one: a request holding its own system message is then a mismatch."""
    target: dict[str, Any] = next(
        (t for t in spec.get("targets", []) if t.get("model") == model), {})
    kinds = {t.get("type"): t for t in target.get("transforms") or []}
    if "replace_system_prompt" not in kinds or "strip_template" not in kinds:
        return None
    ref = str(kinds["strip_template"].get("template"))
    template = client.prompt_template(ref)
    if template.system_prompt is not None or not template.has_chat_parts:
        return None
    return (f"warning: template {ref} has no system prompt, so a request holding the app's "
            f"own system message is a template mismatch for {model} (own_system_prompt: sent "
            "unstripped, as the app sent it; export skips such examples)")


@click.command("promote")
@click.option("--alias", required=True, help="The alias apps send as their model.")
@click.option("--model", required=True, help="The model to promote (e.g. ft:...).")
@click.option("--canary", type=float, default=100.0,
              callback=canary_share,
              show_default=True, help="Percent of the alias's traffic; 100 promotes fully.")
@click.option("--provider", default=None, help="Provider of the model [default openai].")
@click.option("--base-url", default=None, help="OpenAI-compatible server of the model.")
@click.option("--api-key-env", default=None, help="Variable holding the model's key.")
@click.option("--prompt-suffix", default=None,
              help="Legacy-format models: the separator the proxy appends to the model's "
                   "prompts (only the model's: the current target gets the app's request).")
@click.option("--stop", multiple=True,
              help="The stop sequence always sent to the model (merged with the app's own). "
                   "Repeatable (up to 4).")
@click.option("--strip-template", default=None, metavar="NAME-vN",
              help="A frozen template the proxy takes out of the model's requests (the "
                   "model learned it; see `tuneloop templates`).")
@click.option("--system-prompt", default=None,
              help="A short system prompt the model gets in place of the app's (or of the "
                   "stripped template's).")
@click.option("--from-export", "export_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Take --prompt-suffix and --stop (legacy export) and "
                                 "--strip-template/--system-prompt from the export the model "
                                 "was trained on.")
@click.option("--drop-transform", "drop_transform", multiple=True,
              type=click.Choice(sorted(DROP_CHOICES)),
              help="Remove this transform from the model (kept otherwise: the transforms the "
                   "model already has in the route stay unless named again or dropped). "
                   "Repeatable.")
@click.option("--no-transforms", is_flag=True,
              help="Drop every transform the model has in the route: it gets only those "
                   "named in this command.")
@click.option("--keep-fallbacks/--drop-fallbacks", default=True, show_default=True)
@click.option("--previous-as-fallback/--no-previous-fallback", default=True, show_default=True,
              help="On a full promotion, keep the previous target as the first fallback.")
@api_option
@click.pass_context
@domain_errors
def promote(ctx: click.Context, alias: str, model: str, canary: float, provider: str | None,
            base_url: str | None, api_key_env: str | None, prompt_suffix: str | None,
            stop: tuple[str, ...], strip_template: str | None, system_prompt: str | None,
            export_dir: Path | None, drop_transform: tuple[str, ...], no_transforms: bool,
            keep_fallbacks: bool, previous_as_fallback: bool, api: str | None) -> None:
    """Route a canary share (or all) of an alias's traffic to a model. Transforms (separator,
    stop, template, system prompt) apply to that model's requests only; those it already has
    in the route are kept unless named again (replaced) or dropped."""
    stops: str | list[str] | None = (None if not stop else stop[0] if len(stop) == 1
                                     else list(stop))
    given: dict[str, Any] = {"prompt_suffix": prompt_suffix, "stop": stops,
                             "strip_template": strip_template, "system_prompt": system_prompt}
    dropped = [DROP_CHOICES[d] for d in drop_transform]
    clash = sorted(k for k, v in given.items() if v is not None and GIVEN_TYPE[k] in dropped)
    if clash:
        raise click.UsageError(f"--drop-transform removes what --{clash[0].replace('_', '-')} "
                               "sets: give one of them")
    if export_dir is not None:
        for key, value in export_transforms(export_dir).items():
            if GIVEN_TYPE[key] not in dropped:
                given[key] = given[key] or value
    with make_client(ctx, api) as client:
        result = client.promote(
            alias, model, canary=canary, provider=provider, base_url=base_url,
            api_key_env=api_key_env, prompt_suffix=given["prompt_suffix"], stop=given["stop"],
            strip_template=given["strip_template"], system_prompt=given["system_prompt"],
            keep_fallbacks=keep_fallbacks, previous_as_fallback=previous_as_fallback,
            drop_transforms=dropped, no_transforms=no_transforms)
        warning = replaced_own_system_warning(client, result["spec"], model)
    kind = "fully" if canary >= 100 else f"as a {canary:g}% canary"
    click.echo(f"promoted {model} {kind} on {alias}: {describe_route(result['spec'])}")
    named = {GIVEN_TYPE[k] for k, v in given.items() if v is not None}
    click.echo(candidate_transforms_line(result["spec"], model, named))
    if warning:
        click.echo(warning, err=True)
    for keyless in result.get("warnings", []):
        click.echo(f"warning: {keyless}", err=True)


def describe_promotion(episode: dict[str, Any]) -> str:
    """`ft-v1 (promoted fully at ... by cli, #12)`: a promotion episode (GET .../canary
    `promotion`, a rollback's `undone`) for people."""
    canary = episode.get("canary") or 100
    share = "fully" if canary >= 100 else f"as a {canary:g}% canary"
    return (f"{episode.get('model')} (promoted {share} at {episode.get('promoted_at')} by "
            f"{episode.get('promoted_by') or 'unknown'}, #{episode.get('promoted_seq')})")


@click.command("rollback")
@click.option("--alias", required=True, help="The alias to roll back.")
@click.option("--model", default=None,
              help="The model you mean to roll back: refused (exit 5) when the latest "
                   "promotion not yet rolled back is another model's.")
@click.option("--expect-seq", type=click.IntRange(min=0), default=None,
              help="The route history seq you read (`routes history`): refused (exit 5) "
                   "when the route changed since.")
@click.option("--json", "as_json", is_flag=True, help="Print the restored route as JSON.")
@click.option("--force", is_flag=True,
              help="When the route was changed since a full promotion (or its canary left "
                   "the route), restore the route from before it anyway; right after another "
                   "rollback, roll back again anyway (refused without: exit 5).")
@api_option
@click.pass_context
@domain_errors
def rollback(ctx: click.Context, alias: str, model: str | None, expect_seq: int | None,
             as_json: bool, force: bool, api: str | None) -> None:
    """Restore the alias's route from before its latest promotion not yet rolled back (says
    which). When the route was changed since (by hand), a canary is taken out of the current
    route instead, its share given back to the other targets; a full promotion is refused
    unless --force. Right after another rollback, refused (by the server) unless --model
    names the model."""
    with make_client(ctx, api) as client:
        result = client.rollback(alias, force=force, expect_seq=expect_seq, model=model)
    if as_json:
        click.echo(json.dumps(result["spec"], indent=2))
        return
    how = " (taken out of the route as changed since)" if result.get("rebuilt") else ""
    undone = result.get("undone")
    what = describe_promotion(undone) if undone else result["model"]
    click.echo(f"rolled back {what} on {alias}{how}: {describe_route(result['spec'])}")
