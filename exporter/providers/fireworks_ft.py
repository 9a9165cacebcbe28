"""Fireworks AI supervised fine-tuning (LoRA) behind the provider interface.

Its REST API (https://docs.fireworks.ai/api-reference), under `/v1/accounts/{account}`:
datasets (`POST /datasets` with `datasetId` and `dataset.userUploaded`, then
`POST /datasets/{id}:upload` multipart; `GET /datasets/{id}` until `state` is READY),
`POST /supervisedFineTuningJobs` (`dataset`, `baseModel`, `outputModel`, `epochs`, ...),
`GET /supervisedFineTuningJobs/{id}` (`state`: JOB_STATE_*), `POST .../{id}:cancel`, and
`POST /deployedModels` (`model`, `serverless`) to load the LoRA for serving, then
`GET /deployedModels/{id}` until its `state` is DEPLOYED (the reference lists
STATE_UNSPECIFIED, UNDEPLOYING, DEPLOYING, DEPLOYED, UPDATING:
https://fireworks.ai/docs/api-reference/get-deployed-model); a LoRA loaded before (409) is
found through `GET /models/{id}` (`deployedModelRefs`). Until then the inference API answers
404 for the model, so `deploy` waits, at most `deploy_timeout_s`. The model is
`accounts/{account}/models/{id}`, served by the OpenAI-compatible inference API
(https://api.fireworks.ai/inference/v1) with FIREWORKS_API_KEY. Fireworks' API has no job
events, metrics file or servable checkpoints: the interface says so (ProviderUnsupported).
Nor does a job report the tokens it trained on or a price (its `jobProgress` token counts
belong to batch inference jobs), so a Fireworks job's training cost stays unknown (None)
rather than guessed.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from exporter.providers.base import (
    Checkpoint,
    JobEvent,
    JobInfo,
    JobSpec,
    LossCurves,
    TransientProviderError,
    UploadedFiles,
)
from exporter.providers.http_api import AlreadyExists, HttpTrainer, JsonApi, epoch, servable
from exporter.providers.serving import ServedModel
from tuneloop.errors import ProviderError, ProviderUnsupported

KEY_ENV = "FIREWORKS_API_KEY"
SUCCEEDED = frozenset({"JOB_STATE_COMPLETED", "JOB_STATE_EARLY_STOPPED"})
FAILED = frozenset({"JOB_STATE_FAILED", "JOB_STATE_EXPIRED", "JOB_STATE_FAILED_CLEANING_UP"})
RUNNING = frozenset({"JOB_STATE_RUNNING", "JOB_STATE_WRITING_RESULTS", "JOB_STATE_EVALUATION"})
HYPERPARAMETERS = {"n_epochs": "epochs", "batch_size": "batchSize",
                   "learning_rate": "learningRate", "lora_rank": "loraRank"}
READY_POLLS = 30
DEPLOYED = "DEPLOYED"
GONE = frozenset({"UNDEPLOYING"})  # being removed: never becomes servable by waiting


def _status(state: str) -> str:
    if state in SUCCEEDED:
        return "succeeded"
    if state in FAILED:
        return "failed"
    if state == "JOB_STATE_CANCELLED":
        return "cancelled"
    return "running" if state in RUNNING else "queued"


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def job_info(job: Mapping[str, Any]) -> JobInfo:
    state = str(job.get("state") or "JOB_STATE_UNSPECIFIED")
    status = _status(state)
    detail = job.get("status") or {}
    error = ({"code": state, "message": str(detail.get("message") or state)}
             if status == "failed" else None)
    hyper = {ours: job[theirs] for ours, theirs in HYPERPARAMETERS.items()
             if job.get(theirs) is not None}
    return JobInfo(
        id=_short(str(job["name"])), status=status, base_model=str(job.get("baseModel") or ""),
        fine_tuned_model=job.get("outputModel") if status == "succeeded" else None,
        training_file=job.get("dataset"), validation_file=job.get("evaluationDataset"),
        error=error, created_at=epoch(job.get("createTime")),
        finished_at=epoch(job.get("completedTime")), hyperparameters=hyper,
        method="supervised")


def model_id(suffix: str | None, seed: str) -> str:
    """A Fireworks resource id (lower-case letters, digits, dashes; at most 63)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", (suffix or "tuneloop").lower()).strip("-") or "tuneloop"
    return f"{stem[:40]}-{seed[:12]}"


class FireworksFineTuning(HttpTrainer):
    name = "fireworks"
    label = "Fireworks"
    hyperparameters = HYPERPARAMETERS

    def __init__(self, api_key: str, account: str, base_url: str, inference_url: str, *,
                 timeout: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 deploy_timeout_s: float = 900.0, deploy_poll_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.account = account
        self.deploy_timeout_s, self.deploy_poll_s, self.clock = \
            deploy_timeout_s, deploy_poll_s, clock
        self.inference_url = inference_url.rstrip("/")
        self.api = JsonApi("Fireworks", f"{base_url.rstrip('/')}/v1/accounts/{account}",
                           api_key, timeout=timeout)
        self.sleep = sleep

    def _dataset(self, path: Path) -> str:
        content = path.read_bytes()
        dataset = f"tl-{hashlib.sha256(content).hexdigest()[:20]}-{path.stem[:10]}"
        dataset = re.sub(r"[^a-z0-9-]", "-", dataset.lower())
        count = sum(1 for line in content.splitlines() if line.strip())
        body = {"datasetId": dataset,
                "dataset": {"userUploaded": {}, "exampleCount": str(count),
                            "displayName": path.name}}
        with suppress(AlreadyExists):  # the same content uploaded before: reused below
            self.api.call("POST", "/datasets", f"create dataset for {path.name}", json=body)
        info = self.api.call("GET", f"/datasets/{dataset}", f"dataset {dataset}")
        if info.get("state") != "READY":
            self.api.call("POST", f"/datasets/{dataset}:upload", f"upload {path.name}",
                          files={"file": (path.name, content, "application/octet-stream")})
            for _ in range(READY_POLLS):
                info = self.api.call("GET", f"/datasets/{dataset}", f"dataset {dataset}")
                if info.get("state") == "READY":
                    break
                self.sleep(1.0)
            else:
                raise ProviderError(f"dataset {dataset} ({path.name}) is still "
                                    f"{info.get('state')} at Fireworks after the upload")
        return f"accounts/{self.account}/datasets/{dataset}"

    def upload(self, training: Path, validation: Path | None) -> UploadedFiles:
        return UploadedFiles(self._dataset(training),
                             self._dataset(validation) if validation else None)

    def create(self, files: UploadedFiles, spec: JobSpec) -> JobInfo:
        self.check(spec)
        seed = hashlib.sha256(f"{files.training_file}{time.time_ns()}".encode()).hexdigest()
        output = f"accounts/{self.account}/models/{model_id(spec.suffix, seed)}"
        body: dict[str, Any] = {"dataset": files.training_file, "baseModel": spec.base_model,
                                "outputModel": output, "displayName": spec.suffix or output}
        body |= {HYPERPARAMETERS[k]: v for k, v in spec.hyperparameters.items()}
        if files.validation_file:
            body["evaluationDataset"] = files.validation_file
        return job_info(self.api.call("POST", "/supervisedFineTuningJobs",
                                      "create fine-tuning job", json=body))

    def retrieve(self, job_id: str) -> JobInfo:
        return job_info(self.api.call("GET", f"/supervisedFineTuningJobs/{job_id}",
                                      f"job {job_id}"))

    def list_jobs(self, limit: int = 20) -> Sequence[JobInfo]:
        answer = self.api.call("GET", "/supervisedFineTuningJobs", "list jobs",
                               params={"pageSize": limit})
        return [job_info(job) for job in answer.get("supervisedFineTuningJobs") or []]

    def events_after(self, job_id: str, last_seen: str | None) -> list[JobEvent]:
        """Fireworks' API has no event log for a job: following shows its state changes."""
        return []

    def cancel(self, job_id: str) -> JobInfo:
        self.api.call("POST", f"/supervisedFineTuningJobs/{job_id}:cancel", f"cancel {job_id}",
                      json={})
        return self.retrieve(job_id)

    def results(self, job_id: str) -> LossCurves:
        raise ProviderUnsupported(
            "Fireworks' API has no per-step metrics file for a job (see its dashboard or "
            f"W&B run); `tuneloop jobs show {job_id}` has what tuneloop recorded")

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        raise ProviderUnsupported(
            "Fireworks keeps no intermediate checkpoints a route can serve: tuneloop "
            "evaluates and promotes the job's output model with --provider fireworks")

    def deploy(self, job: JobInfo) -> ServedModel:
        """Load the LoRA for serverless serving (already loaded: fine), wait until Fireworks
        serves it (DEPLOYED), and say where a route reaches it: Fireworks' OpenAI-compatible
        inference, under the model's full name. An evaluation of a LoRA still deploying would
        score 404s, not the model."""
        model = servable(job)
        try:
            deployed = self.api.call("POST", "/deployedModels", f"deploy {model}",
                                     json={"model": model, "serverless": True})
        except AlreadyExists:  # loaded before (an earlier attempt): wait for that one
            deployed = self._deployed_ref(model)
        self._wait_deployed(model, deployed)
        return ServedModel(model, self.inference_url, KEY_ENV)

    def _deployed_ref(self, model: str) -> Mapping[str, Any]:
        """The deployed model of `model` (its name and state), from the model's refs."""
        found = self.api.call("GET", f"/models/{_short(model)}", f"model {model}")
        refs = [r for r in found.get("deployedModelRefs") or [] if isinstance(r, Mapping)]
        if not refs:
            raise ProviderError(f"deploy {model}: Fireworks says it is deployed already but "
                                "lists no deployed model for it")
        return next((r for r in refs if r.get("state") == DEPLOYED), refs[0])

    def _wait_deployed(self, model: str, deployed: Mapping[str, Any]) -> None:
        """Poll the deployed model until it is DEPLOYED; ProviderError when it is being
        removed, reports an error, or is not DEPLOYED within `deploy_timeout_s`. States the
        reference may add later are waited on like DEPLOYING."""
        name = str(deployed.get("name") or "")
        deadline = self.clock() + self.deploy_timeout_s
        while True:
            state = str(deployed.get("state") or "STATE_UNSPECIFIED")
            status = deployed.get("status") or {}
            code = str(status.get("code") or "OK") if isinstance(status, Mapping) else "OK"
            if state == DEPLOYED:
                return
            if state in GONE or code != "OK":
                why = status.get("message") if isinstance(status, Mapping) else None
                raise ProviderError(f"deploy {model}: Fireworks' deployed model {name or '?'} "
                                    f"is {state} ({code}{f': {why}' if why else ''}): it will "
                                    "not serve the model; load it again (`tuneloop jobs serve`)")
            if self.clock() >= deadline:
                raise ProviderError(
                    f"deploy {model}: still {state} at Fireworks after "
                    f"{self.deploy_timeout_s:g}s (deployed model {name or '?'}); not evaluated "
                    "while it cannot answer: the cycle tries again at its next run "
                    "(TUNELOOP_FIREWORKS_DEPLOY_TIMEOUT_S waits longer)")
            self.sleep(min(self.deploy_poll_s, max(0.0, deadline - self.clock())))
            if not name:
                deployed = self._deployed_ref(model)
                name = str(deployed.get("name") or "")
                continue
            with suppress(TransientProviderError):  # a blip while polling: ask again
                deployed = self.api.call("GET", f"/deployedModels/{_short(name)}",
                                         f"deployed model {name}")
