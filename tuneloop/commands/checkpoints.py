"""`tuneloop jobs checkpoints JOB`: a job's checkpoints with their validation loss, beside
their evaluation scores; with `--dataset`, evaluate the last `--checkpoints K` of them against
`--baseline`, and with `--promote ALIAS`, route the best one (see exporter/checkpoints.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuneloop.commands.common import api_option, domain_errors, make_client, settings_from
from tuneloop.commands.evaluate import proxy_api_key
from tuneloop.errors import ConfigError, NotFound


@click.command("checkpoints")
@click.argument("job_id")
@click.option("--checkpoints", "last", type=click.IntRange(1), default=None,
              help="Only the last K checkpoints [default: all].")
@click.option("--dataset", "export_dir", default=None,
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Evaluate each checkpoint on this export's validation set.")
@click.option("--baseline", default=None, help="The model the checkpoints must beat.")
@click.option("--scorer", default="exact", show_default=True,
              help="exact | exact_strict | module:function | classification | judge")
@click.option("--judge-model", default=None, help="judge scorer: the model that compares.")
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="judge scorer: what a better answer is [default: a general rubric].")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate only the first N validation examples.")
@click.option("--promote", "alias", default=None,
              help="Route the best checkpoint on this alias (admin token).")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True), default=100.0,
              show_default=True, help="With --promote: the best checkpoint's share.")
@click.option("--api-key-env", default=None,
              help="Variable holding the key the proxy expects [default OPENAI_API_KEY].")
@click.option("--json", "as_json", is_flag=True)
@api_option
@click.pass_context
@domain_errors
def checkpoints(ctx: click.Context, job_id: str, last: int | None, export_dir: Path | None,
                baseline: str | None, scorer: str, judge_model: str | None,
                rubric: Path | None, limit: int | None, alias: str | None, canary: float,
                api_key_env: str | None, as_json: bool, api: str | None) -> None:
    """A job's checkpoints: validation loss and evaluation scores; evaluate, promote the best."""
    from exporter.checkpoints import (
        best_checkpoint,
        evaluate_checkpoints,
        last_checkpoints,
        render_checkpoints,
        stored_evaluations,
    )
    from exporter.evaluate import EvalOptions
    from exporter.judge import load_rubric

    if export_dir is not None and baseline is None:
        raise ConfigError("--dataset needs --baseline (the model the checkpoints must beat)")
    if alias is not None and export_dir is None:
        raise ConfigError("--promote needs --dataset and --baseline: the best checkpoint is "
                          "the one that evaluates best")
    with make_client(ctx, api) as client:
        found = last_checkpoints(_job_provider(ctx, client, job_id), job_id, last)
        if export_dir is not None and baseline is not None:
            options = EvalOptions(found[-1].model, baseline, scorer=scorer, limit=limit,
                                  judge_model=judge_model, rubric=load_rubric(rubric))
            key = proxy_api_key(settings_from(ctx), api_key_env)
            results = evaluate_checkpoints(client, found, export_dir, options, api_key=key)
        else:
            results = stored_evaluations(found, client.eval_runs(limit=1000))
        scored = [r for r in results if r.margin is not None]
        best = best_checkpoint(scored) if scored else None
        promoted = None
        if alias is not None and best is not None:
            promoted = client.promote(alias, best.checkpoint.model, canary=canary)
    if as_json:
        click.echo(json.dumps({"job": job_id, "checkpoints": [r.to_json() for r in results],
                               "best": None if best is None else best.to_json(),
                               "promoted": promoted}, indent=2))
        return
    click.echo(render_checkpoints(results, best))
    if promoted is not None and best is not None:
        kind = "fully" if canary >= 100 else f"as a {canary:g}% canary"
        click.echo(f"promoted {best.checkpoint.model} (step {best.checkpoint.step}) {kind} "
                   f"on {alias}")


def _job_provider(ctx: click.Context, client: Any, job_id: str) -> Any:
    """The provider the job was recorded with (OpenAI for a job tuneloop didn't record)."""
    from exporter.providers.registry import provider_of

    try:
        record = client.job(job_id)
    except NotFound:
        record = {}
    return provider_of(record, settings_from(ctx))
