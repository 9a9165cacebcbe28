"""The fine-tuning provider interface: what `tuneloop finetune` and `tuneloop jobs` need.

A provider uploads an export directory, starts a job, reports its state and events, cancels
it, and fetches its metrics and checkpoints. OpenAI's jobs API is the first implementation
(:mod:`exporter.providers.openai_ft`); Together, Fireworks and Azure OpenAI follow
(`exporter.providers.registry`). A provider without a feature (checkpoints a route can serve,
a metrics file) raises `tuneloop.errors.ProviderUnsupported` saying so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tuneloop.errors import ProviderError


class TransientProviderError(ProviderError):
    """The provider could not be reached or answered 429/5xx: worth retrying."""

    code = "provider_unavailable"


Method = Literal["supervised", "dpo"]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class JobSpec:
    base_model: str
    method: Method = "supervised"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)  # n_epochs, beta, ...
    suffix: str | None = None
    seed: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadedFiles:
    training_file: str
    validation_file: str | None


@dataclass(frozen=True)
class JobInfo:
    id: str
    status: str
    base_model: str
    fine_tuned_model: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    result_files: tuple[str, ...] = ()
    trained_tokens: int | None = None
    error: Mapping[str, Any] | None = None
    created_at: int | None = None
    finished_at: int | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    method: str | None = None
    cost_usd: float | None = None
    """What the provider says the job cost (Together's `total_price`); None: not reported,
    then the cost is the trained tokens at the base model's known training price."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class JobEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossCurves:
    """Per-step metrics from the job's result file. Missing values are None."""

    steps: list[int]
    train_loss: list[float | None]
    valid_loss: list[float | None]
    columns: dict[str, list[float | None]]

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "columns": self.columns,
        }


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_result_csv(text: str) -> LossCurves:
    """Parse a result file (`step,train_loss,train_accuracy,valid_loss,...`). Rows without a
    step are skipped; an empty cell is None (no validation at that step)."""
    reader = csv.DictReader(io.StringIO(text))
    names = [n for n in (reader.fieldnames or []) if n != "step"]
    steps: list[int] = []
    columns: dict[str, list[float | None]] = {name: [] for name in names}
    for row in reader:
        step = _number(row.get("step"))
        if step is None:
            continue
        steps.append(int(step))
        for name in names:
            columns[name].append(_number(row.get(name)))
    empty: list[float | None] = [None] * len(steps)
    return LossCurves(
        steps,
        columns.get("train_loss", empty),
        columns.get("valid_loss", empty),
        columns,
    )


CHECKPOINT_METRICS = ("train_loss", "train_mean_token_accuracy", "valid_loss",
                      "valid_mean_token_accuracy", "full_valid_loss",
                      "full_valid_mean_token_accuracy")


@dataclass(frozen=True)
class Checkpoint:
    """A model the job saved at a step, usable like the final model (OpenAI keeps the last
    epochs' checkpoints). `metrics` has the CHECKPOINT_METRICS the provider gave (None:
    not given; the validation ones need a validation file)."""

    id: str
    model: str
    step: int
    created_at: int | None = None
    metrics: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def valid_loss(self) -> float | None:
        """The loss on the whole validation set when the provider computed it, else the
        loss on the validation batch at that step."""
        full = self.metrics.get("full_valid_loss")
        return full if full is not None else self.metrics.get("valid_loss")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "step": self.step,
                "created_at": self.created_at, "metrics": dict(self.metrics),
                "valid_loss": self.valid_loss}


class FineTuneProvider(Protocol):
    name: str

    def upload(self, training: Any, validation: Any | None) -> UploadedFiles: ...

    def create(self, files: UploadedFiles, spec: JobSpec) -> JobInfo: ...

    def retrieve(self, job_id: str) -> JobInfo: ...

    def list_jobs(self, limit: int = 20) -> Sequence[JobInfo]: ...

    def events_after(self, job_id: str, last_seen: str | None) -> list[JobEvent]:
        """Events newer than `last_seen` (all when None), oldest first."""
        ...

    def cancel(self, job_id: str) -> JobInfo: ...

    def results(self, job_id: str) -> LossCurves: ...

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        """The job's checkpoints, by step ([]: none yet; ProviderUnsupported: the provider
        keeps none a route can serve)."""
        ...
