"""Together AI fine-tuning (LoRA) behind the provider interface.

Its REST API (https://docs.together.ai/reference): `POST /files/upload` (multipart: `file`,
`file_name`, `purpose=fine-tune`, `file_type=jsonl`), `POST /fine-tunes` (`training_file`,
`model`, `n_epochs`, `lora`, `suffix`, ...), `GET /fine-tunes/{id}` (`status`: pending, queued,
running, compressing, uploading, cancel_requested, cancelled, error, completed; the model's
name in `output_name`), `GET /fine-tunes/{id}/events`, `POST /fine-tunes/{id}/cancel`,
`GET /fine-tunes`. Once the job's data is tokenized, the job reports `token_count` (the
tokens billed: epochs x training tokens + evaluations x validation tokens) and `total_price`
in nanodollars (the together SDK's `finetune_price_to_dollars` divides by 1e9): they fill
the job's trained tokens and training cost. The fine-tuned LoRA is served by Together's
OpenAI-compatible inference under the same base URL, with the same key (TOGETHER_API_KEY).
There is no deployment to wait for: Together serves a LoRA fine-tune serverless once the job
completes ("fine-tune your model and start running inference immediately",
https://docs.together.ai/docs/lora-inference); a model it does not serve (yet) answers 404,
which fails the evaluation rather than scoring it (exporter/evaluate.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.providers.base import (
    Checkpoint,
    JobEvent,
    JobInfo,
    JobSpec,
    LossCurves,
    UploadedFiles,
)
from exporter.providers.http_api import HttpTrainer, JsonApi, epoch, servable
from exporter.providers.serving import ServedModel
from tuneloop.errors import ProviderError, ProviderUnsupported

KEY_ENV = "TOGETHER_API_KEY"
STATUS = {"pending": "queued", "queued": "queued", "running": "running",
          "compressing": "running", "uploading": "running", "cancel_requested": "cancelling",
          "completed": "succeeded", "error": "failed", "user_error": "failed",
          "cancelled": "cancelled"}
EVENT_LEVEL = {"job_error": "error", "job_failed": "error", "warning": "warn"}
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate")


def _event_id(index: int) -> str:
    return f"ev-{index:06d}"


def _index(event_id: str | None) -> int:
    if event_id is None:
        return -1
    try:
        return int(event_id.removeprefix("ev-"))
    except ValueError:
        return -1


def _event(index: int, item: Mapping[str, Any]) -> JobEvent:
    kind = str(item.get("type") or "")
    data = {k: v for k in ("step", "total_steps", "token_count", "checkpoint_path",
                           "model_path") if (v := item.get(k)) is not None}
    return JobEvent(id=_event_id(index), created_at=epoch(item.get("created_at")) or 0,
                    level=EVENT_LEVEL.get(kind, str(item.get("level") or "info")),
                    message=str(item.get("message") or kind), type=kind or None, data=data)


NANODOLLARS = 1e9


def _count(value: Any) -> float | None:
    """A figure Together reports (0 until the data is tokenized: not reported yet)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def job_info(job: Mapping[str, Any]) -> JobInfo:
    raw = str(job.get("status") or "")
    status = STATUS.get(raw, raw)
    events = job.get("events") or []
    error = None
    if status == "failed":
        failures = [e for e in events if str(e.get("type")) in EVENT_LEVEL
                    and EVENT_LEVEL[str(e.get("type"))] == "error"]
        message = failures[-1].get("message") if failures else job.get("error")
        error = {"code": raw, "message": str(message or f"the job ended {raw}")}
    hyper = {k: job[k] for k in HYPERPARAMETERS if job.get(k) is not None}
    if job.get("lora") is not None:
        hyper["lora"] = job["lora"]
    output = job.get("output_name") or job.get("model_output_name")
    tokens, price = _count(job.get("token_count")), _count(job.get("total_price"))
    return JobInfo(
        id=str(job["id"]), status=status, base_model=str(job.get("model") or ""),
        fine_tuned_model=str(output) if output and status == "succeeded" else None,
        training_file=job.get("training_file"), validation_file=job.get("validation_file"),
        trained_tokens=None if tokens is None else int(tokens), error=error,
        cost_usd=None if price is None else price / NANODOLLARS,
        created_at=epoch(job.get("created_at")),
        finished_at=epoch(job.get("updated_at")) if status in ("succeeded", "failed",
                                                               "cancelled") else None,
        hyperparameters=hyper, method="supervised")


class TogetherFineTuning(HttpTrainer):
    name = "together"
    label = "Together"
    hyperparameters = HYPERPARAMETERS

    def __init__(self, api_key: str, base_url: str, *, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.api = JsonApi("Together", self.base_url, api_key, timeout=timeout)

    def upload(self, training: Path, validation: Path | None) -> UploadedFiles:
        def send(path: Path) -> str:
            answer = self.api.call(
                "POST", "/files/upload", f"upload {path.name}",
                data={"purpose": "fine-tune", "file_name": path.name, "file_type": "jsonl"},
                files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
            if not isinstance(answer, dict) or not answer.get("id"):
                raise ProviderError(f"upload {path.name}: Together answered no file id")
            return str(answer["id"])

        return UploadedFiles(send(training), send(validation) if validation else None)

    def create(self, files: UploadedFiles, spec: JobSpec) -> JobInfo:
        self.check(spec)
        body: dict[str, Any] = {"training_file": files.training_file, "model": spec.base_model,
                                "lora": True, **spec.hyperparameters}
        if files.validation_file:
            body |= {"validation_file": files.validation_file, "n_evals": 1}
        if spec.suffix:
            body["suffix"] = spec.suffix
        return job_info(self.api.call("POST", "/fine-tunes", "create fine-tuning job",
                                      json=body))

    def retrieve(self, job_id: str) -> JobInfo:
        return job_info(self.api.call("GET", f"/fine-tunes/{job_id}", f"job {job_id}"))

    def list_jobs(self, limit: int = 20) -> Sequence[JobInfo]:
        answer = self.api.call("GET", "/fine-tunes", "list jobs")
        jobs = sorted(answer.get("data") or [], key=lambda j: str(j.get("created_at")),
                      reverse=True)
        return [job_info(job) for job in jobs[:limit]]

    def events_after(self, job_id: str, last_seen: str | None) -> list[JobEvent]:
        """Together lists a job's events oldest first, all at once, without ids: an event's
        id here is its position, so resuming after one is slicing the list."""
        answer = self.api.call("GET", f"/fine-tunes/{job_id}/events", f"events of {job_id}")
        items = answer.get("data") or []
        start = _index(last_seen) + 1
        return [_event(i, item) for i, item in enumerate(items) if i >= start]

    def cancel(self, job_id: str) -> JobInfo:
        return job_info(self.api.call("POST", f"/fine-tunes/{job_id}/cancel",
                                      f"cancel {job_id}"))

    def results(self, job_id: str) -> LossCurves:
        raise ProviderUnsupported(
            "Together's API has no per-step metrics file for a job (its loss curves are in "
            f"the job's Weights & Biases run); `tuneloop jobs show {job_id}` has its events")

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        raise ProviderUnsupported(
            "Together's checkpoints are downloads, not models a route can serve: tuneloop "
            "evaluates and promotes the job's final model (output_name) with --provider "
            "together")

    def deploy(self, job: JobInfo) -> ServedModel:
        """A LoRA's `output_name` is served by Together's OpenAI-compatible inference."""
        return ServedModel(servable(job), self.base_url, KEY_ENV)
