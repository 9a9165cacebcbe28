"""A fine-tuning job's checkpoints, each evaluated like a candidate, and the best of them.

OpenAI keeps checkpoints of a job's last epochs; each is a model a route can serve, and the
last one is not always the best (a model can overfit in its last epoch). `evaluate_checkpoints`
runs the same evaluation as `tuneloop evaluate` (exporter/evaluate.py) on each of the last `k`
checkpoints against one baseline; every evaluation is a stored eval run. The best checkpoint
has the highest margin over the baseline; a tie goes to the lower validation loss, then the
later step. Providers without checkpoints return none and there is nothing to choose from.
Choosing the best of K on the same examples flatters it (the winner's curse): each of the K
evaluations is made at Bonferroni's 1 - (1 - confidence) / K, so the chosen one's interval
still holds at `confidence`, and the report says so. The best is promoted only through the
gate (exporter/eval_gate.py), as in `tuneloop cycle`.

Scores are compared only between evaluations on the same dataset against the same baseline
with the same scorer (`comparison`): a checkpoint scored against a weaker model is no better
for it. Without `--dataset`, each checkpoint shows its stored run of the comparison most
checkpoints share (the newest such, on a tie); when a checkpoint has none, nothing is picked
as best and the listing says which runs differ (`not_comparable`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.eval_report import EvalReport
from exporter.evaluate import EvalOptions, evaluate
from exporter.providers.base import Checkpoint, FineTuneProvider
from tuneloop.client import AdminClient
from tuneloop.errors import ModelUnreachable, NotFound


@dataclass(frozen=True)
class CheckpointEval:
    checkpoint: Checkpoint
    eval_run_id: str | None = None
    candidate_score: float | None = None
    baseline_score: float | None = None
    margin: float | None = None
    margin_interval: list[float] | None = None  # when evaluated now (the run list has none)
    report: EvalReport | None = field(default=None, compare=False)  # when evaluated now
    baseline: str | None = None  # the model it was scored against
    dataset: str | None = None  # the export evaluated on
    scorer: str | None = None
    threshold: float | None = None  # classification
    not_scored: str | None = None  # why it has no scores (it could not be reached)

    @property
    def comparison(self) -> Comparison:
        """What its scores can be compared with: the same dataset, baseline and scorer."""
        return (self.dataset, self.baseline, self.scorer, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {**self.checkpoint.to_json(), "eval_run_id": self.eval_run_id,
                "candidate_score": self.candidate_score, "baseline_score": self.baseline_score,
                "margin": self.margin, "margin_interval": self.margin_interval,
                "baseline": self.baseline, "dataset": self.dataset, "scorer": self.scorer,
                **({"not_scored": self.not_scored} if self.not_scored else {})}


Comparison = tuple[str | None, str | None, str | None, float | None]


def _comparison(run: dict[str, Any]) -> Comparison:
    return (run.get("dataset"), run.get("baseline"), run.get("scorer"), run.get("threshold"))


def last_checkpoints(provider: FineTuneProvider, job_id: str, k: int | None) -> list[Checkpoint]:
    """The job's last `k` checkpoints (all when None), by step; NotFound when it has none."""
    found = provider.checkpoints(job_id)
    if not found:
        raise NotFound(f"job {job_id} has no checkpoints (the provider keeps none, or the job "
                       "has not saved any yet)")
    return found[-k:] if k else found


def evaluate_checkpoints(client: AdminClient, checkpoints: Sequence[Checkpoint],
                         export_dir: Path, options: EvalOptions, *,
                         api_key: str | None = None,
                         earlier: Sequence[dict[str, Any]] = ()) -> list[CheckpointEval]:
    """Each checkpoint as `options.candidate`, one stored eval run each, every interval at
    Bonferroni's level for len(checkpoints) comparisons, whether or not all can be scored.
    A checkpoint the server does not serve (ModelUnreachable with a 404) is kept as not scored,
    with the reason; one unreachable otherwise (5xx or connection failures after the retries:
    perhaps a blip) fails the whole, as an unreachable baseline does, to be evaluated again
    (a cycle retries its step). `earlier`: stored eval
    runs (GET /admin/evals, newest first) whose report is reused for a checkpoint evaluated
    the same way on the same data (a retry does not ask the working checkpoints again)."""
    comparisons = max(1, len(checkpoints))
    results = []
    for checkpoint in checkpoints:
        asked = dataclasses.replace(options, candidate=checkpoint.model, comparisons=comparisons)
        report = _stored_report(client, earlier, export_dir, asked)
        if report is None:
            try:
                report = evaluate(client, export_dir, asked, api_key=api_key)
            except ModelUnreachable as exc:
                if exc.role != "candidate" or not exc.not_served:
                    raise
                results.append(CheckpointEval(checkpoint, baseline=options.baseline,
                                              dataset=str(export_dir), scorer=options.scorer,
                                              not_scored=exc.message))
                continue
        results.append(CheckpointEval(checkpoint, report.run_id,
                                      report.models["candidate"]["score"],
                                      report.models["baseline"]["score"], report.margin,
                                      report.margin_interval, report, options.baseline,
                                      report.dataset, options.scorer, report.threshold))
    return results


def _stored_report(client: AdminClient, runs: Sequence[dict[str, Any]], export_dir: Path,
                   options: EvalOptions) -> EvalReport | None:
    """The newest done run in `runs` of `options` (the same candidate, baseline, scorer and
    data, intervals at the same levels, the same judge and rubric), as its report."""
    for run in runs:
        if (run.get("status"), run.get("candidate"), run.get("baseline"), run.get("scorer"),
                run.get("dataset")) != ("done", options.candidate, options.baseline,
                                        options.scorer, str(export_dir)):
            continue
        stored = client.eval_run(str(run["id"])).get("report")
        try:
            report = EvalReport(**stored) if isinstance(stored, dict) else None
        except TypeError:  # a report of another shape (an older version's)
            report = None
        if report is not None and _evaluated_as(report, options):
            return report
    return None


def _evaluated_as(report: EvalReport, options: EvalOptions) -> bool:
    intervals = report.intervals or {}
    pairwise = report.pairwise or {}
    judged = (pairwise.get("judge"), pairwise.get("rubric")) == (options.judge_model,
                                                                  options.rubric)
    return (intervals.get("family_confidence") == options.confidence
            and intervals.get("comparisons") == options.comparisons
            and intervals.get("repeated", 1) == options.repeated
            and intervals.get("resamples") == options.resamples
            and intervals.get("seed") == options.seed
            and (report.pairwise is None or judged)
            and (options.limit is None or report.examples <= options.limit))


def _rank(result: CheckpointEval) -> tuple[float, float, int]:
    loss = result.checkpoint.valid_loss
    return (-math.inf if result.margin is None else result.margin,
            -(math.inf if loss is None else loss), result.checkpoint.step)


def best_checkpoint(results: Sequence[CheckpointEval]) -> CheckpointEval:
    """The best scored result; ModelUnreachable when none could be scored (each unreached),
    NotFound when there is none."""
    scored = [r for r in results if r.not_scored is None]
    if not scored and results:
        raise ModelUnreachable(
            f"none of the {len(results)} checkpoints could be evaluated: "
            + "; ".join(f"step {r.checkpoint.step}: {r.not_scored}" for r in results),
            role="candidate")
    if not scored:
        raise NotFound("no evaluated checkpoint to choose from")
    return max(scored, key=_rank)


def not_comparable(results: Sequence[CheckpointEval]) -> str | None:
    """Why the scored results cannot be ranked against each other (evaluated on other
    datasets, against other baselines or with other scorers), or None when they can."""
    scored = [r for r in results if r.margin is not None]
    if len({r.comparison for r in scored}) <= 1:
        return None
    shown = "; ".join(f"step {r.checkpoint.step}: against {r.baseline} on {r.dataset} "
                      f"({r.scorer})" for r in scored)
    return (f"not comparable, no best picked: these evaluations differ ({shown}); "
            "`--dataset DIR --baseline MODEL` evaluates them all on the same examples "
            "against the same model")


def comparable_best(results: Sequence[CheckpointEval]) -> CheckpointEval | None:
    """The best scored result when the scored ones are comparable, else None."""
    scored = [r for r in results if r.margin is not None]
    if not scored or not_comparable(scored) is not None:
        return None
    return best_checkpoint(scored)


def stored_evaluations(checkpoints: Sequence[Checkpoint],
                       runs: Sequence[dict[str, Any]]) -> list[CheckpointEval]:
    """The checkpoints with the scores of a stored done eval run (GET /admin/evals, newest
    first), if any: for each, its newest run of the comparison (dataset, baseline, scorer)
    most of them have a run of (the newest such on a tie), else its newest run."""
    models = {c.model for c in checkpoints}
    done = [r for r in runs if r.get("status") == "done" and r.get("candidate") in models]
    covered: dict[Comparison, set[str]] = {}
    for seen in done:  # newest first: dict order breaks ties for the newest comparison
        covered.setdefault(_comparison(seen), set()).add(str(seen["candidate"]))
    common = max(covered, key=lambda key: len(covered[key]), default=None)
    results = []
    for checkpoint in checkpoints:
        mine = [r for r in done if r.get("candidate") == checkpoint.model]
        chosen = [r for r in mine if _comparison(r) == common] or mine
        run = chosen[0] if chosen else None
        results.append(CheckpointEval(checkpoint) if run is None else CheckpointEval(
            checkpoint, run["id"], run.get("candidate_score"), run.get("baseline_score"),
            run.get("margin"), baseline=run.get("baseline"), dataset=run.get("dataset"),
            scorer=run.get("scorer"), threshold=run.get("threshold")))
    return results


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(bounds: Sequence[float] | None) -> str:
    return "-" if not bounds else f"[{bounds[0]:+.3f}, {bounds[1]:+.3f}]"


def _dataset(path: str | None) -> str:
    return "-" if not path else Path(path).name or path


def render_checkpoints(results: Sequence[CheckpointEval], best: CheckpointEval | None) -> str:
    """One line per checkpoint: step, validation loss (full set when known), eval scores, the
    model they are against and the dataset (directory name); a line saying why no best is
    picked when the scores are not comparable."""
    evaluated = [r.report for r in results if r.report is not None]
    level = f"{evaluated[0].confidence * 100:.4g}%" if evaluated else "95%"
    against = max([len("against"), *(len(r.baseline or "-") for r in results)])
    data = max([len("dataset"), *(len(_dataset(r.dataset)) for r in results)])
    lines = [f"step  valid_loss  full_valid_loss  score   baseline  margin   margin {level:<12}"
             f"{'against':<{against}}  {'dataset':<{data}}  model"]
    for result in results:
        metrics = result.checkpoint.metrics
        mark = "  <- best" if best is not None and result.checkpoint == best.checkpoint else ""
        lines.append(f"{result.checkpoint.step:>4}  {_number(metrics.get('valid_loss')):>10}  "
                     f"{_number(metrics.get('full_valid_loss')):>15}  "
                     f"{_number(result.candidate_score):>6}  {_number(result.baseline_score):>8}"
                     f"  {_number(result.margin):>7}  {_interval(result.margin_interval):<17}"
                     f"  {result.baseline or '-':<{against}}  {_dataset(result.dataset):<{data}}"
                     f"  {result.checkpoint.model}{mark}")
    apart = not_comparable(results)
    if apart is not None:
        lines.append(f"({apart})")
    lines += [f"(step {r.checkpoint.step} not scored: {r.not_scored})"
              for r in results if r.not_scored]
    if len(evaluated) > 1:
        family = (evaluated[0].intervals or {}).get("family_confidence", 0.95)
        lines.append(f"(intervals at {level}: Bonferroni over {len(evaluated)} checkpoints, so "
                     f"the best one's holds at {family * 100:.4g}% though it was chosen on the "
                     "same examples)")
    return "\n".join(lines)
