"""`tuneloop jobs checkpoints JOB`: a job's checkpoints with their validation loss, beside
their evaluation scores; with `--dataset`, evaluate the last `--checkpoints K` of them against
`--baseline`, and with `--promote ALIAS`, route the best one as a canary when it passes the
same gate as `tuneloop cycle` (exporter/eval_gate.py: against the alias's stable model, as
exporter/cycle_steps.py `gate_baseline`), with the transforms its evaluation
gave it (the export's stripped template and system prompt, a legacy separator and stop, as
`promote --from-export`); when it does not, nothing is routed and the command exits with 8
(see exporter/checkpoints.py). Nothing watches a canary opened here: the command says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from exporter.eval_gate import (
    MAX_ERROR_SHARE,
    MIN_DECIDED,
    MIN_DISCORDANT,
    MOST_ERROR_SHARE,
)
from tuneloop.commands.common import (
    api_option,
    domain_errors,
    gate_confidence,
    make_client,
    refuse_unused_judge_options,
    settings_from,
)
from tuneloop.commands.evaluate import proxy_api_key
from tuneloop.errors import ConfigError, GateNotPassed, NotFound


@click.command("checkpoints")
@click.argument("job_id")
@click.option("--checkpoints", "last", type=click.IntRange(1), default=None,
              help="Only the last K checkpoints [default: all].")
@click.option("--dataset", "export_dir", default=None,
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Evaluate each checkpoint on this export's validation set.")
@click.option("--baseline", default=None,
              help="The model the checkpoints must beat; with --promote, the model the alias "
                   "serves (its stable model, as the cycle's gate) when it has a route.")
@click.option("--scorer", default="exact", show_default=True,
              help="exact | exact_strict | module:function | classification | judge")
@click.option("--judge-model", default=None, help="judge scorer: the model that compares.")
@click.option("--rubric", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="judge scorer: what a better answer is [default: a general rubric].")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate only the first N validation examples.")
@click.option("--promote", "alias", default=None,
              help="Route the best checkpoint on this alias (admin token) if it passes the "
                   "gate (as `tuneloop cycle`'s [evaluate]).")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True), default=None,
              help="With --promote: the best checkpoint's share [default: 10, as [canary] "
                   "percent].")
@click.option("--full", is_flag=True,
              help="With --promote: route all the alias's traffic to it (no canary).")
@click.option("--margin", type=click.FloatRange(0), default=0.0, show_default=True,
              help="The gate: the margin's lower confidence bound must reach this.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.95, show_default=True, callback=gate_confidence,
              help="Of the intervals, for the K checkpoints together (Bonferroni).")
@click.option("--min-decided", type=click.IntRange(1), default=MIN_DECIDED, show_default=True,
              help="The gate, judge scorer: decided pairs (wins + losses) needed.")
@click.option("--min-discordant", type=click.IntRange(1), default=MIN_DISCORDANT,
              show_default=True,
              help="The gate, other scorers: examples the two models scored differently.")
@click.option("--max-error-share", type=click.FloatRange(0, MOST_ERROR_SHARE),
              default=MAX_ERROR_SHARE, show_default=True,
              help="The gate: the largest share of examples with a failed request.")
@click.option("--api-key-env", default=None,
              help="Variable holding the key the proxy expects [default OPENAI_API_KEY].")
@click.option("--json", "as_json", is_flag=True)
@api_option
@click.pass_context
@domain_errors
def checkpoints(ctx: click.Context, job_id: str, last: int | None, export_dir: Path | None,
                baseline: str | None, scorer: str, judge_model: str | None,
                rubric: Path | None, limit: int | None, alias: str | None,
                canary: float | None, full: bool, margin: float, confidence: float,
                min_decided: int, min_discordant: int, max_error_share: float,
                api_key_env: str | None, as_json: bool, api: str | None) -> None:
    """A job's checkpoints: validation loss and evaluation scores; evaluate, promote the best."""
    from exporter.checkpoints import (
        best_checkpoint,
        comparable_best,
        evaluate_checkpoints,
        last_checkpoints,
        render_checkpoints,
        stored_evaluations,
    )
    from exporter.cycle_config import CanaryConfig, canary_share_problem
    from exporter.cycle_steps import alias_baseline
    from exporter.eval_gate import GateRules, gate_decision, margin_problem
    from exporter.evaluate import EvalOptions
    from exporter.judge import load_rubric, self_judging
    from tuneloop.commands.promote import describe_route, export_transforms

    refuse_unused_judge_options(scorer, judge_model, rubric)
    if export_dir is not None and baseline is None:
        raise ConfigError("--dataset needs --baseline (the model the checkpoints must beat)")
    if alias is not None and export_dir is None:
        raise ConfigError("--promote needs --dataset and --baseline: the best checkpoint is "
                          "the one that evaluates best")
    if full and canary is not None:
        raise ConfigError("--full and --canary are exclusive: --full routes all the traffic")
    wrong_share = None if canary is None else canary_share_problem(canary)
    if wrong_share is not None:  # before evaluating anything
        raise click.BadParameter(wrong_share.replace("percent = ", "")
                                 + ("; use --full to route all the traffic (no canary test)"
                                    if canary is not None and canary >= 100 else ""),
                                 param_hint="--canary")
    wrong_margin = margin_problem(margin, scorer)
    if wrong_margin is not None:
        raise click.BadParameter(wrong_margin, param_hint="--margin")
    share = 100.0 if full else canary if canary is not None else CanaryConfig().percent
    rules = GateRules(margin, "lower_bound", min_decided, min_discordant, max_error_share)
    with make_client(ctx, api) as client:
        if alias is not None and baseline is not None:  # the gate routes: as the cycle's
            alias_baseline(client, alias, baseline, f"--baseline {baseline}",
                           "give that model as --baseline, or leave --promote out")
        found = last_checkpoints(_job_provider(ctx, client, job_id), job_id, last)
        if export_dir is not None and baseline is not None:
            options = EvalOptions(found[-1].model, baseline, scorer=scorer, limit=limit,
                                  judge_model=judge_model, rubric=load_rubric(rubric),
                                  confidence=confidence)
            key = proxy_api_key(settings_from(ctx), api_key_env)
            for checkpoint in found if scorer == "judge" else []:
                same = self_judging(judge_model, checkpoint.model, baseline)
                if same is not None:
                    click.echo(f"warning: {same}", err=True)
                    break
            results = evaluate_checkpoints(client, found, export_dir, options, api_key=key)
            if all(r.not_scored for r in results):
                best_checkpoint(results)  # ModelUnreachable: none could be evaluated
        else:
            results = stored_evaluations(found, client.eval_runs(limit=1000))
        best = comparable_best(results)  # None: nothing scored, or scores not comparable
        promoted = decision = None
        if alias is not None and best is not None and best.report is not None:
            decision = gate_decision(best.report, rules)
            if decision.passed and export_dir is not None:  # with its evaluation's transforms
                given = export_transforms(export_dir)
                promoted = client.promote(alias, best.checkpoint.model, canary=share,
                                          prompt_suffix=given.get("prompt_suffix"),
                                          stop=given.get("stop"),
                                          strip_template=given.get("strip_template"),
                                          system_prompt=given.get("system_prompt"))
    gate = None if decision is None else {"passed": decision.passed,
                                          "reasons": decision.reasons}
    if as_json:
        click.echo(json.dumps({"job": job_id, "checkpoints": [r.to_json() for r in results],
                               "best": None if best is None else best.to_json(),
                               "gate": gate, "promoted": promoted}, indent=2))
    else:
        click.echo(render_checkpoints(results, best))
    if decision is not None and best is not None and not decision.passed:
        raise GateNotPassed(f"not promoted: the best checkpoint {best.checkpoint.model} (step "
                            f"{best.checkpoint.step}) did not pass the gate: "
                            + "; ".join(decision.reasons))
    if promoted is not None and best is not None and alias is not None and not as_json:
        kind = "fully" if share >= 100 else f"as a {share:g}% canary"
        click.echo(f"promoted {best.checkpoint.model} (step {best.checkpoint.step}) {kind} "
                   f"on {alias}: {describe_route(promoted['spec'])}")
        if share < 100:
            click.echo(unwatched(alias, best.checkpoint.model), err=True)


def unwatched(alias: str, model: str) -> str:
    """A canary opened here has no sequential test behind it: only `tuneloop cycle` watches
    the canaries its own runs open."""
    return (f"note: nothing watches this canary (`tuneloop cycle` watches only the canaries "
            f"its runs open): look at its errors and feedback (the review app's Routes page), "
            f"then `tuneloop promote --alias {alias} --model {model}` to give it all the "
            f"traffic or `tuneloop rollback --alias {alias}` to take it back")


def _job_provider(ctx: click.Context, client: Any, job_id: str) -> Any:
    """The provider the job was recorded with (OpenAI for a job tuneloop didn't record)."""
    from exporter.providers.registry import provider_of

    try:
        record = client.job(job_id)
    except NotFound:
        record = {}
    return provider_of(record, settings_from(ctx))
