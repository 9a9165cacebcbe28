"""A fake Together AI: files, LoRA fine-tuning jobs and OpenAI-compatible chat, built from
Together's API reference (https://docs.together.ai/reference).

Every route (under /v1, recorded in ``state.requests``) needs ``Authorization: Bearer
<state.api_key>``. A job advances one step each time it is read (``GET /v1/fine-tunes/{id}``),
so a test's polling drives it without sleeping:

    pending -> queued (or error: a training line without "messages") -> running
    -> 3 training steps (events with step/total_steps; a checkpoint_save at the end)
    -> uploading -> completed (``output_name`` is served by /v1/chat/completions)

Injected failures: ``suffix == "fail"`` ends the job in ``error`` during training; a cancel
puts it in ``cancel_requested``, then ``cancelled`` at the next read; and every failure of
:mod:`tests.fakes.common` (``state.fail_next(1, 503)``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.routing import Route

from . import openai_chat
from .common import Call, FakeApp, FakeStateBase, health, json_response
from .trainer_common import keyed_routes, read_job, stamp

ACCOUNT = "tuneloop-fake"
BASE_MODELS = ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Qwen/Qwen3-8B")
TRAIN_STEPS = 3
TERMINAL = ("completed", "error", "cancelled")
PRICE_PER_TOKEN = 480  # nanodollars: $0.48 per 1M tokens


def error_body(status: int, message: str | None) -> dict[str, Any]:
    kinds = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
    return {"error": {"message": message or f"fake Together error {status}",
                      "type": "invalid_request_error" if status < 500 else "server_error",
                      "code": kinds.get(status, str(status))}}


def error(status: int, message: str) -> Response:
    return json_response(error_body(status, message), status)


@dataclass
class TogetherJob:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    n_epochs: int
    lora: bool
    output_name: str
    created_at: str
    problem: str | None
    status: str = "pending"
    ticks: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "finetune", "status": self.status, "model": self.model,
                "training_file": self.training_file, "validation_file": self.validation_file,
                "n_epochs": self.n_epochs, "lora": self.lora, "suffix": self.suffix,
                "output_name": self.output_name, "created_at": self.created_at,
                "updated_at": self.created_at, "token_count": self.tokens(),
                "total_price": self.tokens() * PRICE_PER_TOKEN, "events": list(self.events)}

    def tokens(self) -> int:
        """Billed tokens, known once the data is tokenized (after queueing)."""
        return 0 if self.status in ("pending", "queued") else 1000 * self.n_epochs


@dataclass
class FakeTogetherState(FakeStateBase):
    api_key: str = "together-test-key"
    files: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, TogetherJob] = field(default_factory=dict)

    def served_models(self) -> set[str]:
        done = {j.output_name for j in self.jobs.values() if j.status == "completed"}
        return set(BASE_MODELS) | done


def event(job: TogetherJob, kind: str, message: str, **data: Any) -> None:
    job.events.append({"object": "fine-tune-event", "created_at": stamp(), "type": kind,
                       "message": message, "level": None, **data})


def tick(job: TogetherJob) -> None:
    job.ticks += 1
    n = job.ticks
    if job.status == "cancel_requested":
        job.status = "cancelled"
        event(job, "job_stopped", "Fine-tuning job cancelled")
    elif n == 1 and job.problem:
        job.status = "error"
        event(job, "job_error", job.problem)
    elif n == 1:
        job.status = "queued"
        event(job, "job_queued", "Job is queued")
    elif n == 2:
        job.status = "running"
        event(job, "job_start", "Training started")
    elif n == 4 and job.suffix == "fail":
        job.status = "error"
        event(job, "job_error", "Training failed: CUDA out of memory at step 2")
    elif n <= 2 + TRAIN_STEPS:
        step = n - 2
        event(job, "epoch_complete", f"Epoch completed, at step {step}", step=step,
              total_steps=TRAIN_STEPS)
        if step == TRAIN_STEPS:
            event(job, "checkpoint_save", f"Checkpoint saved at step {step}", step=step)
    elif n == 3 + TRAIN_STEPS:
        job.status = "uploading"
        event(job, "model_uploading", "Uploading model")
    else:
        job.status = "completed"
        event(job, "job_complete", f"Fine-tuning job completed: {job.output_name}")


def file_problem(content: bytes) -> str | None:
    for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            return f"Invalid training file: line {number} is not JSON"
        if not isinstance(row, dict) or "messages" not in row:
            return f"Invalid training file: line {number} has no \"messages\""
    return None


async def upload_file(call: Call, state: FakeTogetherState) -> Response:
    form = await call.request.form()
    upload = form.get("file")
    for name in ("purpose", "file_name"):
        if not isinstance(form.get(name), str) or not form.get(name):
            return error(400, f"{name} is required")
    if not isinstance(upload, UploadFile):
        return error(400, "file is required")
    content = await upload.read()
    file_id = f"file-{state.next_id('', 12)}"
    state.files[file_id] = content
    return json_response({"id": file_id, "object": "file", "created_at": state.now(),
                          "filename": form.get("file_name"), "bytes": len(content),
                          "purpose": form.get("purpose"), "Processed": True,
                          "FileType": form.get("file_type") or "jsonl",
                          "LineCount": content.count(b"\n")})


async def create_job(call: Call, state: FakeTogetherState) -> Response:
    body = call.data
    for name in ("training_file", "model"):
        if not isinstance(body.get(name), str):
            return error(400, f"{name} is required")
    if body["model"] not in BASE_MODELS:
        return error(400, f"Model {body['model']} is not available for fine-tuning")
    for name in ("training_file", "validation_file"):
        if body.get(name) is not None and body[name] not in state.files:
            return error(400, f"{name} {body[name]} does not exist")
    suffix = body.get("suffix")
    code = state.next_id("", 8)
    base = body["model"].split("/")[-1]
    job = TogetherJob(
        id=f"ft-{state.next_id('', 12)}", model=body["model"],
        training_file=body["training_file"], validation_file=body.get("validation_file"),
        suffix=suffix, n_epochs=int(body.get("n_epochs") or 1), lora=bool(body.get("lora")),
        output_name=f"{ACCOUNT}/{base}-{suffix + '-' if suffix else ''}{code}",
        created_at=stamp(), problem=file_problem(state.files[body["training_file"]]))
    event(job, "job_pending", "Fine tune request created")
    state.jobs[job.id] = job
    return json_response(job.to_json())


def _job(call: Call, state: FakeTogetherState) -> TogetherJob | Response:
    job_id = call.request.path_params["job_id"]
    job = state.jobs.get(job_id)
    return job if job is not None else error(404, f"Fine-tune job {job_id} not found")


async def retrieve_job(call: Call, state: FakeTogetherState) -> Response:
    job = _job(call, state)
    job = read_job(job, isinstance(job, Response) or job.status in TERMINAL, tick)
    return job if isinstance(job, Response) else json_response(job.to_json())


async def list_jobs(call: Call, state: FakeTogetherState) -> Response:
    return json_response({"data": [j.to_json() for j in state.jobs.values()]})


async def list_events(call: Call, state: FakeTogetherState) -> Response:
    job = _job(call, state)
    return job if isinstance(job, Response) else json_response({"data": list(job.events)})


async def cancel_job(call: Call, state: FakeTogetherState) -> Response:
    job = _job(call, state)
    if isinstance(job, Response):
        return job
    if job.status in TERMINAL:
        return error(400, f"Job {job.id} is {job.status} and can't be cancelled")
    job.status = "cancel_requested"
    return json_response(job.to_json())


async def chat_completions(call: Call, state: FakeTogetherState) -> Response:
    model = call.data.get("model")
    if model not in state.served_models():
        return error(404, f"Unable to access model {model}. Please visit "
                          "https://api.together.ai/models to view the list of supported models.")
    return await openai_chat.chat_completions(call, state)


def refused(call: Call, state: FakeTogetherState) -> Response | None:
    if call.request.headers.get("authorization") != f"Bearer {state.api_key}":
        return error(401, "Invalid API key provided")
    return None


def create_app(state: FakeTogetherState | None = None) -> Starlette:
    state = state if state is not None else FakeTogetherState()
    table = (("/v1/files/upload", upload_file, ["POST"]),
             ("/v1/fine-tunes", create_job, ["POST"]),
             ("/v1/fine-tunes", list_jobs, ["GET"]),
             ("/v1/fine-tunes/{job_id}", retrieve_job, ["GET"]),
             ("/v1/fine-tunes/{job_id}/events", list_events, ["GET"]),
             ("/v1/fine-tunes/{job_id}/cancel", cancel_job, ["POST"]),
             ("/v1/chat/completions", chat_completions, ["POST"]))
    routes = keyed_routes(state, table, error_body, refused)
    app = FakeApp([Route("/health", health, methods=["GET"]), *routes])
    app.state.fake = state
    return app


__all__ = ["FakeTogetherState", "create_app"]
