"""`tuneloop evaluate`: an export's validation set through a candidate and a baseline model,
via the proxy as evaluation traffic; the report is printed and stored (`/admin/evals`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tuneloop.commands.common import (
    api_option,
    domain_errors,
    gate_confidence,
    make_client,
    refuse_unused_judge_options,
    settings_from,
)
from tuneloop.config import Settings
from tuneloop.errors import ConfigError


@click.command("evaluate")
@click.option("--dataset", "export_dir", required=True,
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="The export directory (its validation.jsonl is evaluated).")
@click.option("--candidate", required=True, help="The model to evaluate (e.g. ft:...).")
@click.option("--baseline", required=True, help="The model it must beat.")
@click.option("--scorer", default="exact", show_default=True,
              help="exact | exact_strict | module:function | classification | judge "
                   "(a judge model compares the two answers; see --judge-model)")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="classification: an example is positive at or above this probability.")
@click.option("--metric", default=None,
              help="The number compared [mean; classification: f1 or macro_f1].")
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True)
@click.option("--retries", type=click.IntRange(0, 20), default=4, show_default=True,
              help="Retries of a request after 429, 5xx or a connection failure.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate only the first N validation examples.")
@click.option("--max-tokens", type=click.IntRange(1), default=None)
@click.option("--judge-model", default=None,
              help="judge scorer: the model that compares the answers (through the proxy).")
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="judge scorer: a text file saying what a better answer is "
                   "[default: a general rubric].")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.95, show_default=True, callback=gate_confidence,
              help="Of the scores' intervals; at least 0.8, as the cycle's gate.")
@click.option("--margin", type=click.FloatRange(0), default=0.0, show_default=True,
              help="The gate shown under the report (as the cycle's [evaluate] margin; "
                   "its other settings at their defaults).")
@click.option("--api-key-env", default=None,
              help="Variable holding the key the proxy expects [default OPENAI_API_KEY; "
                   "none: the proxy's own upstream key].")
@click.option("--alias", default=None,
              help="The alias evaluated: the baseline is asked with the transforms its route "
                   "gives it there (needed when routes give it different ones).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@api_option
@click.pass_context
@domain_errors
def evaluate(ctx: click.Context, export_dir: Path, candidate: str, baseline: str, scorer: str,
             threshold: float, metric: str | None, concurrency: int, retries: int,
             limit: int | None, max_tokens: int | None, judge_model: str | None,
             rubric: Path | None, confidence: float, margin: float, api_key_env: str | None,
             alias: str | None, as_json: bool, api: str | None) -> None:
    """Compare a candidate model with a baseline on an export's validation set."""
    from exporter.eval_gate import GateRules, gate_decision, margin_problem
    from exporter.evaluate import EvalOptions
    from exporter.evaluate import evaluate as run_evaluation
    from exporter.judge import load_rubric, self_judging

    refuse_unused_judge_options(scorer, judge_model, rubric)
    wrong_margin = margin_problem(margin, scorer)
    if wrong_margin is not None:  # before sending anything
        raise click.BadParameter(wrong_margin, param_hint="--margin")
    options = EvalOptions(candidate, baseline, scorer=scorer, threshold=threshold,
                          metric=metric, concurrency=concurrency, retries=retries,
                          limit=limit, max_tokens=max_tokens, judge_model=judge_model,
                          rubric=load_rubric(rubric), confidence=confidence, alias=alias)
    same = self_judging(judge_model, candidate, baseline) if scorer == "judge" else None
    if same is not None:
        click.echo(f"warning: {same}", err=True)
    with make_client(ctx, api) as client:
        report = run_evaluation(client, export_dir, options,
                                api_key=proxy_api_key(settings_from(ctx), api_key_env))
    rules = GateRules(margin)
    decision = gate_decision(report, rules)
    if as_json:
        click.echo(json.dumps({**report.to_json(), "gate": {"passed": decision.passed,
                                                            "reasons": decision.reasons}},
                              indent=2))
    else:
        click.echo(report.render() + "\n  " + decision.render(rules))


def proxy_api_key(settings: Settings, api_key_env: str | None) -> str | None:
    """The key evaluation requests carry to the proxy, or None to let it use its own."""
    if api_key_env:
        key = settings.env_secret(api_key_env)
        if key is None:
            raise ConfigError(f"{api_key_env} is not set")
        return key
    return settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
