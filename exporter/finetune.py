"""Fine-tuning an export directory, with every step recorded through the admin API.

    spec = job_spec(load_export(path), "gpt-4o-mini-2024-07-18", suffix="support")
    job = start_job(client, path, spec)              # admin token checked before any upload
    done = wait_for_job(client, job["id"])           # events recorded as shown; loss curves
    done["status"], done["fine_tuned_model"], done["curves"]

The provider runs the job whatever happens here. :func:`wait_for_job` records each event once
it has been shown (with the job's `last_event_id`), so a later call, in any process, resumes
right after it: re-attaching never shows an event twice. Ctrl+C can't fall between showing an
event and recording it (SIGINT waits for the pair); only a hard kill can, and then that one
event is shown again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from exporter.exportdir import ExportDir, load_export
from exporter.hyperparameters import hyperparameters_problem
from exporter.providers.base import FineTuneProvider, JobEvent, JobInfo, JobSpec, LossCurves
from exporter.providers.follow import Backoff, FollowObserver, QuietObserver, follow
from exporter.providers.openai_ft import OpenAIFineTuning, check_compatible, method_for
from exporter.tokens import model_info
from tuneloop.client import AdminClient
from tuneloop.errors import DatasetError, TuneloopError

METHODS = {"sft": "supervised", "supervised": "supervised", "dpo": "dpo"}


class JobFailed(TuneloopError):
    """The fine-tuning job ended failed or cancelled."""

    status_code = 502
    error_type = "upstream_error"
    code = "job_failed"
    exit_code = 8


class JobProvider(FineTuneProvider, Protocol):
    """A provider that can also start a job from an export directory (upload + create)."""

    def start(self, export: ExportDir, spec: JobSpec) -> JobInfo: ...


def default_provider() -> JobProvider:
    """OpenAI's jobs API through the `openai` SDK (OPENAI_API_KEY, OPENAI_BASE_URL)."""
    return OpenAIFineTuning()


def job_spec(export: ExportDir, base_model: str, *, method: str | None = None,
             suffix: str | None = None, seed: int | None = None, epochs: int | None = None,
             batch_size: int | None = None, lr_multiplier: float | None = None,
             beta: float | None = None) -> JobSpec:
    """A job for an export: the method follows the export's format unless given (`sft` or
    `supervised`, `dpo`); hyperparameters left out are the provider's `auto`."""
    chosen = METHODS.get(method or method_for(export))
    if chosen is None:
        raise DatasetError(f"unknown method {method!r}; use sft or dpo", param="method")
    hyper: dict[str, Any] = {}
    for key, value in (("n_epochs", epochs), ("batch_size", batch_size),
                       ("learning_rate_multiplier", lr_multiplier)):
        if value is not None:
            hyper[key] = value
    if beta is not None:
        if chosen != "dpo":
            raise DatasetError("beta is a DPO hyperparameter; use --method dpo", param="beta")
        hyper["beta"] = beta
    problem = hyperparameters_problem(hyper)  # before any upload or job
    if problem is not None:
        raise DatasetError(problem, param="hyperparameters")
    return JobSpec(base_model, "dpo" if chosen == "dpo" else "supervised", hyper, suffix, seed)


def estimated_cost(manifest: Mapping[str, Any], spec: JobSpec) -> float | None:
    """The training cost in USD an export's manifest predicts for this job (its epochs, else
    the default epochs), or None when the model's price is unknown: a spending cap's input."""
    billing = manifest["billing"]
    price = billing.get("price_per_1m_tokens")
    if price is None:
        return None
    epochs = spec.hyperparameters.get("n_epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        epochs = billing["default_epochs"]
    return round(billing["billed_tokens_per_epoch"] * epochs * price / 1e6, 4)


def start_job(client: AdminClient, export_dir: Path, spec: JobSpec,
              provider: JobProvider | None = None) -> dict[str, Any]:
    """Check the token may fine-tune (Forbidden otherwise, before anything is read or
    uploaded), verify the export, upload it, create the job and record it. Returns the
    recorded job."""
    unverified = load_export(export_dir, verify=False)
    dataset_id = (unverified.manifest.get("snapshot") or {}).get("id")
    client.check_job(dataset_id)
    export = load_export(export_dir)
    check_compatible(export, spec)
    chosen = provider or default_provider()
    job = chosen.start(export, spec)
    record = {
        "id": job.id, "provider": chosen.name, "base_model": job.base_model,
        "method": job.method or spec.method, "status": job.status, "dataset_id": dataset_id,
        "spec": {**asdict(spec), "export": str(export.path.resolve()),
                 "training_file": job.training_file, "validation_file": job.validation_file},
    }
    try:
        return client.record_job(record)
    except TuneloopError as exc:
        raise type(exc)(f"job {job.id} was created at {chosen.name} but could not be "
                        f"recorded: {exc.message}") from exc


def event_json(event: JobEvent) -> dict[str, Any]:
    return {"id": event.id, "created_at": event.created_at, "level": event.level,
            "message": event.message, "type": event.type, "data": dict(event.data)}


def job_fields(job: JobInfo) -> dict[str, Any]:
    """What the provider says about a job, as the admin API records it; with the tokens it
    trained on, their cost at the base model's training price (None when unknown)."""
    fields: dict[str, Any] = {"status": job.status, "fine_tuned_model": job.fine_tuned_model,
                              "error": dict(job.error) if job.error else None,
                              "finished_at": job.finished_at}
    if job.trained_tokens is not None:
        price = model_info(job.base_model).training_price_per_1m
        fields["trained_tokens"] = job.trained_tokens
        fields["training_cost_usd"] = (None if price is None
                                       else round(job.trained_tokens * price / 1e6, 6))
    if job.cost_usd is not None:  # the provider's own figure wins over our price table
        fields["training_cost_usd"] = round(job.cost_usd, 6)
    return fields


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl+C (SIGINT) until the block is done (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


class RecordingObserver:
    """Shows what `follow` reports through `inner`, and records it: each event right after it
    is shown, and each change of status."""

    def __init__(self, client: AdminClient, job_id: str, inner: FollowObserver | None = None,
                 status: str | None = None):
        self.client, self.job_id = client, job_id
        self.inner: FollowObserver = inner or QuietObserver()
        self.last_status = status

    def event(self, event: JobEvent) -> None:
        with interrupts_deferred():
            self.inner.event(event)
            self.client.update_job(self.job_id, events=[event_json(event)])

    def status(self, job: JobInfo) -> None:
        self.inner.status(job)
        if job.status != self.last_status:
            self.client.update_job(self.job_id, **job_fields(job))
            self.last_status = job.status

    def connection_lost(self, error: Exception, retry_in: float) -> None:
        self.inner.connection_lost(error, retry_in)


def store_results(client: AdminClient, job_id: str,
                  provider: FineTuneProvider | None = None) -> LossCurves:
    """Fetch the job's result file (metrics per step) and record its loss curves."""
    curves = (provider or default_provider()).results(job_id)
    client.update_job(job_id, curves=curves.to_json())
    return curves


def wait_for_job(client: AdminClient, job_id: str, provider: FineTuneProvider | None = None,
                 *, observer: FollowObserver | None = None, backoff: Backoff | None = None,
                 results: bool = True) -> dict[str, Any]:
    """Follow a recorded job to its end, resuming after the last event recorded; record its
    final state and, when it succeeded, its loss curves. Returns the recorded job (check
    `status`; :func:`raise_for_status` turns failed/cancelled into JobFailed)."""
    chosen = provider or default_provider()
    record = client.job(job_id)
    recorder = RecordingObserver(client, job_id, observer, record["status"])
    outcome = follow(chosen, job_id, last_event_id=record.get("last_event_id"),
                     observer=recorder, backoff=backoff)
    client.update_job(job_id, **job_fields(outcome.job))
    if outcome.job.status == "succeeded" and results and outcome.job.result_files:
        store_results(client, job_id, chosen)
    return client.job(job_id)


def raise_for_status(record: Mapping[str, Any]) -> None:
    if record["status"] in ("failed", "cancelled"):
        error = record.get("error") or {}
        detail = f": {error.get('message')}" if error.get("message") else ""
        raise JobFailed(f"job {record['id']} {record['status']}{detail}")


def refresh_job(client: AdminClient, job_id: str,
                provider: FineTuneProvider | None = None) -> dict[str, Any]:
    """Ask the provider for the job's state now and record it."""
    job = (provider or default_provider()).retrieve(job_id)
    return client.update_job(job_id, **job_fields(job))


def cancel_job(client: AdminClient, job_id: str,
               provider: FineTuneProvider | None = None) -> dict[str, Any]:
    """Cancel at the provider (admin token checked first) and record the new state. A job
    the record already has cancelled is returned as it is, with no provider call (a provider
    refuses to cancel it again)."""
    record = client.job(job_id)  # a job tuneloop doesn't know is a NotFound, not a provider call
    client.check_job()
    if record.get("status") == "cancelled":
        return record
    job = (provider or default_provider()).cancel(job_id)
    return client.update_job(job_id, **job_fields(job))

