"""The steps of `tuneloop cycle`, each a function of the run so far to a `StepResult`:

export → validate → finetune → wait → [checkpoints] → evaluate → canary → watch

A step returns where the run goes next (None: the run is over, with an `outcome`), what to
add to the run's state, and whether to stop here for now (`wait`: a job still training, a
canary without enough traffic yet); the next cycle resumes that step. Outcomes: `promoted`,
`rolled_back`, `not_promoted`, `job_failed`, `over_budget`, `unchanged` (the same data and
training settings as an earlier run that trained a model and reached a decision; one that
failed after starting its job is picked up instead, and a model never found worse is judged
again once when its canary expired undecided or `[evaluate]`/`[canary]` changed:
exporter/cycle_unchanged.py),
`dataset_rejected`, `superseded` (someone changed
the route), `failed` (a step kept failing).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter import cycle_adapter
from exporter.cycle_config import CycleConfig, EvaluateConfig
from exporter.cycle_unchanged import (
    data_key,
    decided,
    last_training,
    resumed,
    same_data,
    training_key,
)
from exporter.eval_gate import gate_decision
from exporter.eval_report import EvalReport
from exporter.evaluate import EvalOptions, evaluate
from exporter.exportdir import load_export
from exporter.finetune import JobProvider, default_provider
from exporter.fix_hints import CYCLE_SKIP_HINT, how_to_fix
from exporter.formats import FormatOptions, RuleViolations
from exporter.judge import load_rubric, rubric_digest, self_judging
from exporter.pipeline import ExportOptions
from exporter.strip import TemplateStrip
from tuneloop.client import AdminClient
from tuneloop.errors import ConfigError, DatasetError, TuneloopError


@dataclass(frozen=True)
class StepResult:
    next_step: str | None
    state: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    wait: bool = False
    note: str = ""  # why it waits, for people
    blocked: bool = False
    """It waits on something only a person can settle (another canary open on the alias, a
    route split between models): `tuneloop cycle` exits 9 so a scheduler notices."""
    warnings: list[str] = field(default_factory=list)
    """What the server warned of while the step acted (a promotion's `warnings`, e.g. a
    target at another server without `api_key_env`): printed, and kept in the step's detail."""


@dataclass
class StepContext:
    client: AdminClient
    config: CycleConfig
    run: dict[str, Any]
    holder: str
    api_key: str | None
    providers: Callable[[str], JobProvider] | None = None
    """Fine-tuning providers by name (from the settings); None: OpenAI's, from its SDK's
    environment."""
    force: bool = False
    """`tuneloop cycle --force`: train even on data and settings an earlier run trained on."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The time the watch judges the canary at (its age, the allowances' open time): the
    clock; a test's count-based clock, so its decisions do not depend on the machine's speed."""

    def provider(self) -> JobProvider:
        name = self.config.finetune.provider
        if self.providers is None:
            if name != "openai":
                raise ConfigError(f"[finetune] provider = {name!r} needs the settings: run the "
                                  "cycle with `tuneloop cycle`")
            return default_provider()
        return self.providers(name)

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.run["state"]
        return state

    def mark_started(self, step: str) -> None:
        self.run = self.client.record_cycle_step(self.run["id"], self.holder, step, "started")


class UnsafeToRetry(TuneloopError):
    """Retrying would risk a second fine-tuning job for the run."""

    status_code = 409
    code = "unsafe_to_retry"
    exit_code = 5


def end(outcome: str, **detail: Any) -> StepResult:
    return StepResult(None, detail=detail, outcome=outcome)


def rejected(message: str, problems: Mapping[str, Sequence[str]], **detail: Any
             ) -> StepResult:
    """The run ends `dataset_rejected` (`tuneloop cycle` exits 2): the message names the
    offending examples, the note says how to fix them or to set `[dataset] skip_invalid`."""
    hint = how_to_fix(problems, skip_hint=CYCLE_SKIP_HINT)
    return StepResult(None, detail={"error": message[:2000], "hint": hint,
                                    "problems": {rule: list(ids)[:20]
                                                 for rule, ids in problems.items()},
                                    **detail},
                      outcome="dataset_rejected", note=message + (f"\n{hint}" if hint else ""))


def export_step(ctx: StepContext) -> StepResult:
    if ctx.config.evaluate.baseline:  # refused before any job is paid for, not after
        gate_baseline(ctx.client, ctx.config)
    cfg = ctx.config.dataset
    fmt = FormatOptions(cfg.format, separator=cfg.separator, stop=cfg.stop,
                        labels=tuple(cfg.labels) if cfg.labels else None,
                        positive_class=cfg.positive_class)
    options = ExportOptions(name=cfg.name, format=fmt, base_model=ctx.config.finetune.base_model,
                            validation_fraction=cfg.validation, seed=cfg.seed, filter=cfg.filter,
                            skip_invalid=cfg.skip_invalid)
    if cfg.strip_template is not None:  # the training data without the template
        options = dataclasses.replace(options, strip=TemplateStrip(
            ctx.client.prompt_template(cfg.strip_template), cfg.system_prompt))
    out = cfg.out_dir / f"{cfg.name}-{ctx.run['id']}"
    try:
        result = cycle_adapter.build_dataset(ctx.client, cfg.name, options, cfg.filter, out,
                                             record=False)
    except DatasetError as exc:  # not enough or unusable data: no job this time
        return rejected(exc.message, exc.problems if isinstance(exc, RuleViolations) else {})
    force = ctx.force or bool(ctx.state.get("force"))
    same = same_data(ctx.client, ctx.config.name, cfg.name, result.manifest, ctx.run["id"],
                     ctx.config.model_dump(mode="json"), force=force)
    if same is not None and same.trained_by is not None:  # decided before: nothing to do
        shutil.rmtree(result.path, ignore_errors=True)
        return StepResult(None, detail={"same_data_as": same.trained_by,
                                        "message": same.message},
                          outcome="unchanged", note=same.message)
    if same is not None and same.path is not None and same.manifest is not None:
        shutil.rmtree(result.path, ignore_errors=True)  # nothing new: no version, no directory
        manifest, path = dict(same.manifest), same.path
    else:
        result = cycle_adapter.record_dataset(ctx.client, result)
        manifest, path = result.manifest, str(result.path)
    train, validation = data_key(manifest)
    state: dict[str, Any] = {"export_path": path, "train_sha256": train,
                             "validation_sha256": validation, **({"force": True} if force else {})}
    after = "validate"
    if same is not None and same.resume_from is not None:  # its job, not a second one
        after, taken = resumed(same.resume_from, bool(ctx.config.evaluate.checkpoints))
        state |= taken
        if same.start is not None:  # a decided run's model, never found worse: judged again
            after = same.start
            state |= {"reopened_from": same.resume_from["id"]}
            earlier = same.resume_from.get("state") or {}
            if same.resume_from.get("outcome") == "not_promoted":  # gated again: corrected
                state["repeated_tests"] = int(earlier.get("repeated_tests") or 1) + 1
            opened = earlier.get("evidence_since") or earlier.get("promoted_at")
            if after == "canary" and opened:  # its canary again: the test goes on from there
                state["evidence_since"] = opened
                if earlier.get("open_s") is not None:  # its allowances count open time only
                    state["evidence_open_s"] = earlier["open_s"]
    return StepResult(after, state=state,
                      detail={"counts": manifest["counts"], "billing": manifest["billing"],
                              **({"message": same.message} if same else {}),
                              **({"resumed_from": state["resumed_from"]}
                                 if "resumed_from" in state else {})},
                      note=same.message if same else "")


def training_cost(manifest: dict[str, Any], hyperparameters: dict[str, Any]) -> float | None:
    """The manifest's billing estimate, for the epochs the job will really run."""
    billing = manifest["billing"]
    epochs = hyperparameters.get("n_epochs")
    price = billing.get("price_per_1m_tokens")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or price is None:
        cost: float | None = billing.get("estimated_cost_usd")
        return cost
    return round(billing["billed_tokens_per_epoch"] * epochs * price / 1e6, 4)


def validate_step(ctx: StepContext) -> StepResult:
    export = load_export(Path(ctx.state["export_path"]))  # checks every file's sha256
    manifest = export.manifest
    errors = [f for f in manifest["validation"].get("findings", [])
              if f.get("severity") == "error"]
    if errors:
        return rejected("the dataset fails validation: " + "; ".join(
            f"{f.get('code')}: {f.get('message', '')}" for f in errors[:20]),
            {str(f.get("code")): list(f.get("examples") or []) for f in errors},
            findings=errors[:20])
    if not (ctx.force or ctx.state.get("force")):  # trained and decided since the export?
        earlier = last_training(ctx.client, ctx.config.name, data_key(manifest),
                                training_key(ctx.config.finetune.model_dump(mode="json")),
                                ctx.run["id"])
        if earlier is not None and decided(earlier):
            return end("unchanged", same_data_as=earlier["id"])
    finetune = ctx.config.finetune
    cost = training_cost(manifest, finetune.hyperparameters)
    cap = finetune.max_cost_usd
    detail = {"estimated_cost_usd": cost, "max_cost_usd": cap}
    if cap is not None and (cost > cap if cost is not None else not finetune.allow_unknown_cost):
        return end("over_budget", **detail)
    return StepResult("finetune", state={"estimated_cost_usd": cost}, detail=detail)


def finetune_step(ctx: StepContext) -> StepResult:
    if ctx.state.get("job_id"):
        return StepResult("wait", detail={"job_id": ctx.state["job_id"]})
    if any(s["step"] == "finetune" and s["status"] == "started" for s in ctx.run["steps"]):
        raise UnsafeToRetry("an earlier attempt of this run may have started a fine-tuning job "
                            "it could not record; not starting another (look for it at the "
                            "provider; the next cycle starts a new run)")
    ctx.mark_started("finetune")  # before the job exists: a crash now is never retried
    cfg = ctx.config.finetune
    job_id = cycle_adapter.start_job(ctx.client, Path(ctx.state["export_path"]), cfg.base_model,
                                     cfg.method, cfg.suffix, cfg.seed, cfg.hyperparameters,
                                     provider=ctx.provider())
    return StepResult("wait", state={"job_id": job_id}, detail={"job_id": job_id})


def wait_step(ctx: StepContext) -> StepResult:
    cfg = ctx.config.finetune
    timeout = None if cfg.wait_timeout_minutes is None else cfg.wait_timeout_minutes * 60
    provider = ctx.provider()
    job = cycle_adapter.wait_for_job(ctx.client, ctx.state["job_id"], poll_s=cfg.poll_seconds,
                                     timeout_s=timeout, provider=provider)
    detail = {"job_id": job["id"], "status": job["status"]}
    if job["status"] == "succeeded":
        after = "checkpoints" if ctx.config.evaluate.checkpoints else "evaluate"
        serving, warnings = cycle_adapter.serve(ctx.client, provider, job["id"])
        return StepResult(after, state={"fine_tuned_model": job["fine_tuned_model"],
                                        "serving": serving},
                          detail={**detail, "fine_tuned_model": job["fine_tuned_model"],
                                  "serving": serving}, warnings=warnings)
    if job["status"] in ("failed", "cancelled"):
        return end("job_failed", **detail, error=job.get("error"))
    return StepResult("wait", detail=detail, wait=True,
                      note=f"job {job['id']} is {job['status']}")


CANARY_RUNS_LOOKED_AT = 100


def open_canary_run(client: AdminClient, config: CycleConfig) -> dict[str, Any] | None:
    """The cycle's newest run that put a canary on the alias's route (its state records
    `promoted_at`, the candidate it promoted and the `stable` model it replaced), when that
    candidate is the route's open canary (`AdminClient.route_canary`: the promotion episode
    still open, never judged by the weights: a canary may take up to 90%)."""
    episode = client.route_canary(config.alias).get("canary")
    if episode is None:
        return None
    for run in client.cycle_runs(config.name, limit=CANARY_RUNS_LOOKED_AT):
        state = run.get("state") or {}
        if not state.get("promoted_at"):
            continue
        # only the newest canary of the cycle can be open: an older one was settled or
        # replaced by it
        return run if state.get("fine_tuned_model") == episode.get("model") else None
    return None


def no_route(alias: str) -> ConfigError:
    return ConfigError(f"the alias {alias!r} has no route: create it (tuneloop routes set) "
                       "or set [evaluate] baseline")


def current_model(client: AdminClient, config: CycleConfig) -> str:
    """The model the alias serves for sure (`stable`, proxy/promotion.py): never a canary
    still open on its route, whoever opened it (this cycle, another one, a person) and
    whatever its share."""
    stable = client.route_canary(config.alias).get("stable")
    if not stable:
        raise no_route(config.alias)
    return str(stable)


def gate_baseline(client: AdminClient, config: CycleConfig) -> str:
    """The model a candidate must beat: the model the alias serves (`current_model`, its
    route's stable model) whenever the alias has a route. `[evaluate] baseline` only stands in
    for an alias with no route yet; one that differs from the model the alias serves is
    refused (a candidate gated against another model could replace a better one)."""
    return alias_baseline(client, config.alias, config.evaluate.baseline,
                          f"[evaluate] baseline = {config.evaluate.baseline!r}",
                          "remove `baseline` (it only serves an alias with no route yet)")


def alias_baseline(client: AdminClient, alias: str, named: str | None, named_as: str,
                   instead: str) -> str:
    """`gate_baseline` for any gate that routes a candidate on `alias` (the cycle's, `jobs
    checkpoints --promote`): the alias's stable model; `named` (the baseline a person named,
    `named_as` in the message, which says to do `instead`) only for an alias with no route."""
    stable = client.route_canary(alias).get("stable")
    if not stable:
        if named:
            return named
        raise no_route(alias)
    if named and named != stable:
        raise ConfigError(f"{named_as}, but the alias {alias!r} serves {stable}: a candidate "
                          "must beat the model it replaces, so the gate compares it with the "
                          f"alias's model; {instead}")
    return str(stable)


def eval_options(cfg: EvaluateConfig, candidate: str, baseline: str,
                 cycle_run_id: str, comparisons: int = 1, alias: str | None = None,
                 repeated: int = 1) -> EvalOptions:
    """The evaluation `[evaluate]` asks for (the judge's model and rubric included);
    `comparisons`: the candidate is the best of that many checkpoints; `repeated`: the how
    many-th gate of this model on these examples (both Bonferroni)."""
    return EvalOptions(candidate, baseline, scorer=cfg.scorer, threshold=cfg.threshold,
                       metric=cfg.metric, concurrency=cfg.concurrency, retries=cfg.retries,
                       limit=cfg.limit, cycle_run_id=cycle_run_id,
                       judge_model=cfg.judge_model, rubric=load_rubric(cfg.rubric),
                       confidence=cfg.confidence, comparisons=comparisons, alias=alias,
                       repeated=repeated)


def gate_passes(report: EvalReport, cfg: EvaluateConfig) -> bool:
    """Whether the candidate beats the current model (exporter/eval_gate.py): by default the
    margin's lower confidence bound must be above 0 and reach the configured margin, with
    enough decided or discordant examples and few failures."""
    return gate_decision(report, cfg.rules).passed


def evaluate_step(ctx: StepContext) -> StepResult:
    cfg = ctx.config.evaluate
    candidate = ctx.state["fine_tuned_model"]
    baseline = gate_baseline(ctx.client, ctx.config)
    # the best of K checkpoints, chosen on these same examples, is gated at Bonferroni's level
    options = eval_options(cfg, candidate, baseline, ctx.run["id"],
                           comparisons=int(ctx.state.get("checkpoints_compared") or 1),
                           alias=ctx.config.alias,
                           repeated=int(ctx.state.get("repeated_tests") or 1))
    report = evaluate(ctx.client, Path(ctx.state["export_path"]), options, api_key=ctx.api_key)
    scores = {"eval_run_id": report.run_id, "baseline": baseline, "margin": report.margin,
              "margin_interval": report.margin_interval, "gate": cfg.gate,
              "candidate_score": report.models["candidate"]["score"],
              "candidate_interval": report.models["candidate"].get("interval"),
              "baseline_score": report.models["baseline"]["score"],
              "baseline_interval": report.models["baseline"].get("interval"),
              "rubric_sha256": rubric_digest(options.rubric)}
    decision = gate_decision(report, cfg.rules)
    beats = decision.passed
    same = self_judging(options.judge_model, candidate, baseline) \
        if cfg.scorer == "judge" else None
    warnings = [same] if same is not None else []
    detail = {**scores, "required_margin": cfg.margin, "gate_reasons": decision.reasons}
    note = report.render(shown=0) + "\n  " + decision.render(cfg.rules)
    if not beats:
        return StepResult(None, state=scores, detail=detail, outcome="not_promoted", note=note,
                          warnings=warnings)
    return StepResult("canary", state=scores, detail=detail, note=note, warnings=warnings)


FIRST_STEP = "export"
STEPS: dict[str, Callable[[StepContext], StepResult]] = {
    "export": export_step,
    "validate": validate_step,
    "finetune": finetune_step,
    "wait": wait_step,
    "evaluate": evaluate_step,
}
"""The steps up to the evaluation; exporter/cycle_checkpoints.py adds `checkpoints`,
exporter/cycle_canary.py `canary` and `watch`."""
