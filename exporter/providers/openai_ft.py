"""OpenAI's fine-tuning jobs API through the official `openai` SDK.

`OPENAI_API_KEY` and `OPENAI_BASE_URL` work as with any OpenAI client (Azure OpenAI and other
compatible services included); a ready client can be passed instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import openai

from exporter.exportdir import ExportDir
from exporter.providers.base import (
    CHECKPOINT_METRICS,
    Checkpoint,
    JobEvent,
    JobInfo,
    JobSpec,
    LossCurves,
    TransientProviderError,
    UploadedFiles,
    parse_result_csv,
)
from exporter.tokens import model_info
from tuneloop.errors import ConfigError, DatasetError, NotFound, ProviderError, TuneloopError

T = TypeVar("T")
EVENTS_PAGE = 100
CHECKPOINTS_PAGE = 100


def _tried(exc: openai.APIError) -> str:
    """` (METHOD URL)` of the request that failed, so the error says where it went."""
    try:
        request = exc.request
    except AttributeError:
        return ""
    return f" ({request.method} {request.url})"


def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except openai.APIError as exc:
        raise _provider_error(f"{what}{_tried(exc)}", exc) from exc


def _provider_error(what: str, exc: openai.APIError) -> TuneloopError:
    if isinstance(exc, openai.NotFoundError):
        return NotFound(f"{what}: {exc.message}")
    if isinstance(exc, openai.APIConnectionError | openai.RateLimitError
                  | openai.InternalServerError):
        return TransientProviderError(f"{what}: {exc}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return TransientProviderError(f"{what}: {exc.message}")
        return ProviderError(f"{what}: the provider refused ({exc.status_code}): {exc.message}")
    return ProviderError(f"{what}: {exc}")


def _dump(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump(exclude_none=True)
        return dumped
    return dict(value)


def _hyperparameters(job: Any) -> dict[str, Any]:
    """The method's own hyperparameters (DPO's beta lives there), else the legacy field."""
    method = _dump(getattr(job, "method", None))
    section = method.get(str(method.get("type")), {})
    return dict(section.get("hyperparameters") or _dump(job.hyperparameters))


def job_info(job: Any) -> JobInfo:
    method = getattr(job, "method", None)
    return JobInfo(
        id=job.id,
        status=job.status,
        base_model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        training_file=job.training_file,
        validation_file=job.validation_file,
        result_files=tuple(job.result_files or ()),
        trained_tokens=job.trained_tokens,
        error=_dump(job.error) or None,
        created_at=job.created_at,
        finished_at=job.finished_at,
        hyperparameters=_hyperparameters(job),
        method=getattr(method, "type", None),
    )


def _event(event: Any) -> JobEvent:
    return JobEvent(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        type=getattr(event, "type", None),
        data=_dump(getattr(event, "data", None)),
    )


def _checkpoint(item: Any) -> Checkpoint:
    metrics = _dump(getattr(item, "metrics", None))
    return Checkpoint(
        id=item.id,
        model=item.fine_tuned_model_checkpoint,
        step=int(item.step_number),
        created_at=item.created_at,
        metrics={name: metrics.get(name) for name in CHECKPOINT_METRICS},
    )


def method_for(export: ExportDir) -> str:
    return str(export.manifest.get("fine_tune_method", "supervised"))


def check_compatible(export: ExportDir, spec: JobSpec) -> None:
    """Refuse before uploading anything: the wrong method, or a file the model can't train on."""
    if spec.method != method_for(export):
        raise DatasetError(
            f"{export.path} is a {export.format} dataset: it trains with method "
            f"{method_for(export)!r}, not {spec.method!r}"
        )
    legacy = export.format in ("legacy", "classification")
    if legacy != model_info(spec.base_model).legacy:
        raise DatasetError(
            f"{spec.base_model} can't train on a {export.format} dataset "
            "(prompt/completion files are for babbage-002 and davinci-002; chat and "
            "preference files for chat models)"
        )


class OpenAIFineTuning:
    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ):
        if client is None:
            try:
                client = openai.OpenAI(
                    api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
                )
            except openai.OpenAIError as exc:
                raise ConfigError(f"cannot reach OpenAI fine-tuning: {exc}") from exc
        self.client = client

    def upload(self, training: Path, validation: Path | None) -> UploadedFiles:
        files = self.client.files

        def send(path: Path) -> str:
            with path.open("rb") as f:
                uploaded = _call(
                    f"upload {path.name}",
                    lambda: files.create(file=(path.name, f), purpose="fine-tune"),
                )
            return str(uploaded.id)

        return UploadedFiles(send(training), send(validation) if validation else None)

    def create(self, files: UploadedFiles, spec: JobSpec) -> JobInfo:
        method: Any = {
            "type": spec.method,
            spec.method: {"hyperparameters": dict(spec.hyperparameters)},
        }
        extra: dict[str, Any] = {}
        if files.validation_file:
            extra["validation_file"] = files.validation_file
        if spec.suffix:
            extra["suffix"] = spec.suffix
        if spec.seed is not None:
            extra["seed"] = spec.seed
        if spec.metadata:
            extra["metadata"] = dict(spec.metadata)
        job = _call(
            "create fine-tuning job",
            lambda: self.client.fine_tuning.jobs.create(
                model=spec.base_model, training_file=files.training_file, method=method, **extra
            ),
        )
        return job_info(job)

    def start(self, export: ExportDir, spec: JobSpec) -> JobInfo:
        """Upload an export directory's files and create the job."""
        check_compatible(export, spec)
        files = self.upload(export.train, export.validation)
        metadata = {
            "tuneloop_dataset": str(export.manifest.get("name", ""))[:512],
            "tuneloop_train_sha256": str(export.manifest["files"]["train.jsonl"]["sha256"]),
            **spec.metadata,
        }
        spec = JobSpec(
            spec.base_model, spec.method, spec.hyperparameters, spec.suffix, spec.seed, metadata
        )
        return self.create(files, spec)

    def retrieve(self, job_id: str) -> JobInfo:
        return job_info(
            _call(f"job {job_id}", lambda: self.client.fine_tuning.jobs.retrieve(job_id))
        )

    def list_jobs(self, limit: int = 20) -> Sequence[JobInfo]:
        page = _call("list jobs", lambda: self.client.fine_tuning.jobs.list(limit=limit))
        return [job_info(job) for job in page.data]

    def cancel(self, job_id: str) -> JobInfo:
        return job_info(
            _call(f"cancel {job_id}", lambda: self.client.fine_tuning.jobs.cancel(job_id))
        )

    def events_after(self, job_id: str, last_seen: str | None,
                     page_size: int = EVENTS_PAGE) -> list[JobEvent]:
        """Events newer than `last_seen`, oldest first. The API lists newest first and pages
        backwards with `after`, so read pages until the last seen event shows up."""
        jobs = self.client.fine_tuning.jobs
        newest_first: list[JobEvent] = []
        cursor: str | None = None
        while True:
            extra: Mapping[str, Any] = {"after": cursor} if cursor else {}
            page = _call(
                f"events of {job_id}",
                partial(jobs.list_events, job_id, limit=page_size, **extra),
            )
            for item in page.data:
                if item.id == last_seen:
                    return newest_first[::-1]
                newest_first.append(_event(item))
            if not page.data or not page.has_more:
                return newest_first[::-1]
            cursor = page.data[-1].id

    def results(self, job_id: str) -> LossCurves:
        job = self.retrieve(job_id)
        if not job.result_files:
            raise NotFound(f"job {job_id} has no result file yet (status {job.status})")
        file_id = job.result_files[0]
        content = _call(f"result file {file_id}", lambda: self.client.files.content(file_id))
        return parse_result_csv(content.text)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Every checkpoint of the job (the API lists newest first, in pages), by step."""
        jobs = self.client.fine_tuning.jobs
        found: list[Checkpoint] = []
        cursor: str | None = None
        while True:
            extra: Mapping[str, Any] = {"after": cursor} if cursor else {}
            page = _call(f"checkpoints of {job_id}",
                         partial(jobs.checkpoints.list, job_id, limit=CHECKPOINTS_PAGE, **extra))
            found.extend(_checkpoint(item) for item in page.data)
            if not page.data or not page.has_more:
                return sorted(found, key=lambda c: c.step)
            cursor = page.data[-1].id
