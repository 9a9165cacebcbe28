"""`cycle.toml`: what `tuneloop cycle` exports, trains, evaluates and promotes. The
`[canary]` section lives in exporter/cycle_canary_config.py, the sections' strict base in
exporter/config_section.py; every name is importable from here.

```toml
name = "support"                 # the cycle (its runs and its lease)
alias = "support-bot"            # the route it promotes on

[dataset]
name = "support"                 # the dataset snapshot's name
format = "chat"                  # chat | legacy | preference | classification
validation = 0.1
filter = { tag = "support" }     # review filters; default: approved production traffic
out_dir = "exports"              # each run exports to <out_dir>/<name>-<run id>
skip_invalid = false             # true: leave out examples that break a rule (listed)
strip_template = "support-bot-v1"  # train without this frozen prompt template; the canary
                                 # then gets the same strip transform (optional)

[finetune]
provider = "openai"              # openai | together | fireworks (azure: not in a cycle)
base_model = "gpt-4o-mini-2024-07-18"
suffix = "support"
hyperparameters = { n_epochs = 3 }
max_cost_usd = 25.0              # the spending cap: a costlier job is not started
poll_seconds = 30
wait_timeout_minutes = 60        # then stop; the next run resumes waiting on the same job

[evaluate]
scorer = "exact"                 # exact | exact_strict | module:function | classification | judge
margin = 0.02                    # the candidate must beat the current model by this much
gate = "lower_bound"             # ...with 95% confidence: the margin's interval's lower bound
                                 # must be above 0 and at least `margin` ("point": the margin)
confidence = 0.95                # of the intervals (bootstrap over examples; judge: exact
                                 # Clopper-Pearson on decided pairs); Bonferroni over checkpoints
                                 # (at least 0.8)
max_error_share = 0.1            # more examples than this with a failed request: not promoted
                                 # (at most 0.5)
min_decided = 10                 # judge: fewer decided pairs (wins + losses): not promoted (>= 1)
min_discordant = 10              # other scorers: fewer examples scored differently: the same
judge_model = "gpt-4o"           # the judge scorer's model, asked through the proxy
rubric = "rubric.md"             # what the judge looks for [default: a general rubric]
checkpoints = 0                  # K > 0: evaluate the job's last K checkpoints, keep the best

[canary]                         # the verdict: Wald's SPRT per metric (exporter/canary_stats.py)
percent = 10                     # 1 to 90: the current model keeps some traffic to compare
alpha = 0.05                     # chance of rolling back a canary within tolerance
beta = 0.2                       # chance of promoting a canary that is `bad_*` worse
tolerated_error_rate_increase = 0.01  # H0: error rate <= the current model's + this
bad_error_rate_increase = 0.05   # H1: error rate >= the current model's + this (roll back)
tolerated_thumbs_down_increase = 0.05  # the same for the share of rated requests below 0
bad_thumbs_down_increase = 0.2
min_feedback = 10                # the thumbs-down test counts from this many rated requests
max_requests_per_user = 5        # one sticky user weighs at most this many requests per target
min_requests = 100               # a promotion needs this many judged canary requests, a
                                 #   sticky user's at most 4 x max_requests_per_user (a rollback
min_age_minutes = 0              #   comes as soon as a test finds the canary worse)
watch_seconds = 10               # `cycle --every`: how often an open canary is looked at
max_hours = 24                   # still undecided this long after its promotion: rolled back
history_hours = 24               # baseline starved beside the canary: its traffic before
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from exporter.config_section import StrictSection
from exporter.cycle_canary_config import (
    MAX_HOURS,
    CanaryConfig,
    canary_share_problem,
)
from exporter.eval_gate import (
    MAX_ERROR_SHARE,
    MIN_DECIDED,
    MIN_DISCORDANT,
    MOST_ERROR_SHARE,
    GateRules,
    confidence_problem,
    margin_problem,
)
from exporter.formats import DEFAULT_SEPARATOR, FormatName
from exporter.hyperparameters import hyperparameters_problem
from tuneloop.errors import ConfigError

__all__ = ["CanaryConfig", "CycleConfig", "DatasetConfig", "EvaluateConfig", "FinetuneConfig",
           "canary_share_problem", "check_evaluate", "load_cycle_config", "parse_cycle_config"]

class DatasetConfig(StrictSection):
    name: str = Field(min_length=1, max_length=128)
    format: FormatName = "chat"
    validation: float = Field(0.1, gt=0, lt=1)
    seed: int = 0
    filter: dict[str, Any] = Field(default_factory=dict)
    out_dir: Path = Path("exports")
    separator: str = DEFAULT_SEPARATOR
    stop: str | None = None
    labels: list[str] | None = None
    positive_class: str | None = None
    strip_template: str | None = Field(None, min_length=1, max_length=200)
    """A frozen template (`name-vN`) the examples are exported without (`export
    --strip-template`); the promotion gives the model the same transform."""
    system_prompt: str | None = None
    """With strip_template: a short system prompt in the template's place."""
    skip_invalid: bool = False
    """Leave out (count and list) examples that break a format rule, as `export
    --skip-invalid`; else one such example rejects the dataset and the run."""

    @model_validator(mode="after")
    def _strip_options(self) -> DatasetConfig:
        if self.system_prompt is not None and self.strip_template is None:
            raise ValueError("system_prompt replaces a stripped template's: set strip_template")
        if self.strip_template is not None and self.format in ("preference", "classification"):
            raise ValueError(f"strip_template does not apply to {self.format} exports")
        return self


AZURE_IN_A_CYCLE = (
    'provider = "azure" cannot run in a cycle: Azure OpenAI serves a fine-tuned model only '
    "once someone deploys it in the Azure resource (portal or management API; the data-plane "
    "key tuneloop has cannot), so every run would train, and pay, then stop before evaluating "
    "it. Train with `tuneloop finetune --provider azure`, deploy the model in Azure, then "
    "`tuneloop evaluate` and `tuneloop promote` the deployment's name")
"""Why: no setting could name the deployment either, as it is made after each job ends."""


class FinetuneConfig(StrictSection):
    provider: Literal["openai", "together", "fireworks", "azure"] = "openai"
    """Where the job runs; its key and base URL come from the settings (README). "azure" is
    refused (`_servable`): named so the refusal says why, not "not one of"."""
    base_model: str = Field(min_length=1)
    method: Literal["supervised", "dpo"] = "supervised"
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    max_cost_usd: float | None = Field(None, ge=0)
    allow_unknown_cost: bool = False
    """With a cap set, a model whose training price is unknown is refused unless this is on."""
    poll_seconds: float = Field(30.0, gt=0, le=3600)
    wait_timeout_minutes: float | None = Field(None, gt=0, le=MAX_HOURS * 60)

    @model_validator(mode="after")
    def _servable(self) -> FinetuneConfig:
        if self.provider == "azure":
            raise ValueError(AZURE_IN_A_CYCLE)
        return self

    @model_validator(mode="after")
    def _hyperparameters(self) -> FinetuneConfig:
        problem = hyperparameters_problem(self.hyperparameters)
        if problem is not None:
            raise ValueError(f"hyperparameters: {problem}")
        return self


class EvaluateConfig(StrictSection):
    baseline: str | None = Field(None, min_length=1)
    """Only for an alias with no route yet: the gate's baseline is otherwise always the model
    the alias serves (its stable model), and a different `baseline` is refused."""
    scorer: str = "exact"
    threshold: float = Field(0.5, ge=0, le=1)
    """classification: the score from which an example counts as the positive class."""
    metric: str | None = None
    margin: float = Field(0.0, ge=0)
    gate: Literal["lower_bound", "point"] = "lower_bound"
    """lower_bound: the margin's confidence interval must lie above 0 and its lower bound reach
    `margin`; point: the margin itself (no statistics; not recommended). With the judge
    scorer the margin is 2 × win rate − 1, the win rate over judged pairs with ties as half
    (exporter/judge.py)."""
    confidence: float = Field(0.95, gt=0.5, lt=1)
    """At least 0.8 (exporter/eval_gate.py MIN_CONFIDENCE): below, a candidate no better than
    the current model would pass more than 1 time in 10."""
    max_error_share: float = Field(MAX_ERROR_SHARE, ge=0, le=MOST_ERROR_SHARE)
    """The share of examples (judge: pairs) with a failed request or judgement above which the
    candidate is not promoted."""
    min_decided: int = Field(MIN_DECIDED, ge=0)
    """judge: the decided pairs (wins + losses) a promotion needs."""
    min_discordant: int = Field(MIN_DISCORDANT, ge=0)
    """Other scorers: the examples the two models scored differently a promotion needs."""
    judge_model: str | None = Field(None, min_length=1)
    rubric: Path | None = None
    concurrency: int = Field(4, ge=1, le=256)
    retries: int = Field(4, ge=0, le=20)
    limit: int | None = Field(None, ge=1)
    api_key_env: str | None = None
    checkpoints: int = Field(0, ge=0, le=100)
    """Evaluate the job's last K checkpoints and go on with the best (0: the final model)."""

    @model_validator(mode="after")
    def _some_evidence(self) -> EvaluateConfig:
        for needed in ("min_decided", "min_discordant"):
            if getattr(self, needed) < 1:
                raise ValueError(f"{needed} = 0 lets a candidate pass the gate on no evidence "
                                 f"(no {needed.removeprefix('min_')} example at all): set "
                                 f"{needed} >= 1")
        low = confidence_problem(self.confidence)
        if low is not None:
            raise ValueError(f"confidence = {low}")
        if self.gate == "point" and self.margin <= 0:
            raise ValueError("gate = \"point\" with margin = 0 promotes a candidate ahead by "
                             "a single lucky example: set a margin above 0, or use the default "
                             "gate = \"lower_bound\"")
        return self

    @property
    def rules(self) -> GateRules:
        return GateRules(self.margin, self.gate, self.min_decided, self.min_discordant,
                         self.max_error_share)


class CycleConfig(StrictSection):
    name: str = Field(min_length=1, max_length=128)
    alias: str = Field(min_length=1, max_length=256)
    dataset: DatasetConfig
    finetune: FinetuneConfig
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    max_step_attempts: int = Field(3, ge=1, le=100)
    """A step that fails this many times fails the run (the next cycle starts a new one)."""
    lease_seconds: float = Field(600.0, ge=10, le=86_400)

    @model_validator(mode="after")
    def _baseline_not_the_alias(self) -> CycleConfig:
        if self.evaluate.baseline == self.alias:
            raise ValueError(f"evaluate.baseline = {self.alias!r} is the alias itself: the "
                             "gate compares the candidate with the model the alias serves; "
                             "remove `baseline`")
        return self


BUILT_IN_SCORERS = ("exact", "exact_strict", "classification", "judge")
METRICS = {"exact": ("mean",), "judge": ("win_rate",),  # exact: also a user function's
           "classification": ("accuracy", "precision", "recall", "f1", "auroc", "auprc",
                              "macro_precision", "macro_recall", "macro_f1")}


def check_evaluate(config: CycleConfig) -> None:
    """What `[evaluate]` names must exist before a run exports, uploads or trains: the scorer
    (a user function is imported now), the judge's model and rubric, and checkpoints the
    provider can serve. A mistake found only at the evaluate step would be found after paying
    for the job."""
    from exporter.judge import load_rubric
    from exporter.providers.registry import SERVABLE_CHECKPOINTS
    from exporter.scoring import load_scorer

    cfg = config.evaluate
    wrong_margin = margin_problem(cfg.margin, cfg.scorer)
    if wrong_margin is not None:
        raise ConfigError(f"cycle config: evaluate.margin: {wrong_margin}")
    if cfg.scorer not in BUILT_IN_SCORERS:
        if ":" not in cfg.scorer:
            raise ConfigError(f"cycle config: evaluate.scorer: {cfg.scorer!r} is not a scorer: "
                              f"use one of {', '.join(BUILT_IN_SCORERS)} or module:function")
        try:
            load_scorer(cfg.scorer)
        except ConfigError as exc:
            raise ConfigError(f"cycle config: evaluate.scorer: {exc.message}") from None
    unused = [name for name in ("judge_model", "rubric") if getattr(cfg, name) is not None]
    if unused and cfg.scorer != "judge":
        raise ConfigError(f"cycle config: evaluate.{unused[0]}: {' and '.join(unused)} "
                          f"{'are' if len(unused) > 1 else 'is'} for the judge scorer, but "
                          f"scorer = {cfg.scorer!r}: set scorer = \"judge\", or remove "
                          f"{' and '.join(unused)}")
    if cfg.scorer == "judge" and not cfg.judge_model:
        raise ConfigError("cycle config: evaluate.judge_model: the judge scorer needs a judge "
                          "model (e.g. judge_model = \"gpt-4o\")")
    metrics = METRICS.get(cfg.scorer, METRICS["exact"])
    if cfg.metric is not None and cfg.metric not in metrics:
        raise ConfigError(f"cycle config: evaluate.metric: {cfg.metric!r} is not a metric of "
                          f"the {cfg.scorer} scorer: use one of {', '.join(metrics)}")
    if cfg.rubric is not None:
        try:
            load_rubric(cfg.rubric)
        except ConfigError as exc:
            raise ConfigError(f"cycle config: evaluate.rubric: {exc.message}") from None
    provider = config.finetune.provider
    if cfg.checkpoints and provider not in SERVABLE_CHECKPOINTS:
        raise ConfigError(f"cycle config: evaluate.checkpoints: provider {provider!r} keeps no "
                          "checkpoints a route can serve (only "
                          f"{', '.join(sorted(SERVABLE_CHECKPOINTS))}): set checkpoints = 0")


def parse_cycle_config(data: dict[str, Any]) -> CycleConfig:
    """The config, refused with a ConfigError naming the field (exit code 2) when a setting
    is wrong, including what `check_evaluate` looks up."""
    try:
        config = CycleConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")  # pydantic's label for ours
        raise ConfigError(f"cycle config: {where + ': ' if where else ''}{msg}") from exc
    check_evaluate(config)
    return config


def load_cycle_config(path: Path) -> CycleConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"cycle config not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_cycle_config(data)
