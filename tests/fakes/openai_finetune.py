"""Fine-tuning jobs of the fake OpenAI upstream, with a clock-driven state machine.

A job moves one tick every ``state.finetune_step_seconds``, computed lazily when read:
tick 1 validating_files -> queued (or failed: bad file), tick 2 running, ticks 3..7 train
(2 of 10 steps each, metrics events, checkpoints at steps 6, 8 and 10 with
OpenAI's checkpoint metrics), tick 8 succeeded.
``suffix == "fail"`` fails the job at tick 4, while running.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from .common import Call, as_dict, json_response
from .openai_common import cursor_page, int_param, openai_error
from .openai_files import StoredFile
from .text import word_count

if TYPE_CHECKING:
    from .openai_upstream import FakeOpenAIState

ORG = "tuneloop-fake"
TOTAL_STEPS = 10
RUN_TICKS = 5
LEGACY_MODELS = ("davinci-002", "babbage-002")
TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULTS = MappingProxyType({"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8})
CSV_HEADER = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"


@dataclass
class Job:
    id: str
    created: float
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    method: dict[str, Any]
    metadata: Any
    code: str
    problem: dict[str, Any] | None
    tokens: int
    status: str = "validating_files"
    ticks: int = 0
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.method[self.method["type"]]["hyperparameters"])

    def model_name(self) -> str:
        return f"ft:{self.model}:{ORG}:{self.suffix or ''}:{self.code}"

    def to_json(self) -> dict[str, Any]:
        hyper = {k: v for k, v in self.hyperparameters.items() if k in DEFAULTS}
        trained = self.tokens * hyper["n_epochs"] if self.status == "succeeded" else None
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": int(self.created),
            "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": f"org-{ORG}",
            "result_files": self.result_files,
            "status": self.status,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "hyperparameters": hyper,
            "trained_tokens": trained,
            "error": self.error,
            "user_provided_suffix": self.suffix,
            "seed": self.seed,
            "estimated_finish": None,
            "integrations": [],
            "metadata": self.metadata,
            "method": self.method,
        }


def loss_at(step: int, validation: bool = False) -> tuple[float, float]:
    loss = round(2.0 / (1 + step) + (0.15 if validation else 0.1), 4)
    return loss, round(1 - loss / 3, 4)


def line_problem(line: str, method: str, model: str) -> str | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "is not valid JSON"
    if not isinstance(row, dict):
        return "is not a JSON object"
    needed: tuple[str, ...]
    if method == "dpo":
        needed = ("input", "preferred_output", "non_preferred_output")
    elif model in LEGACY_MODELS:
        needed = ("prompt", "completion")
    else:
        needed = ("messages",)
    missing = [key for key in needed if key not in row]
    return f"is missing {', '.join(missing)}" if missing else None


def file_problem(content: bytes, method: str, model: str, param: str) -> dict[str, Any] | None:
    lines = [
        (n, line)
        for n, line in enumerate(content.decode("utf-8", "replace").splitlines(), 1)
        if line.strip()
    ]
    detail = "The file has no examples." if not lines else None
    for number, line in lines:
        if problem := line_problem(line, method, model):
            detail = f"Line {number} {problem}."
            break
    if detail is None:
        return None
    message = f"The job failed due to an invalid {param.replace('_', ' ')}. {detail}"
    return {"code": f"invalid_{param}", "message": message, "param": param}


def resolve_method(body: dict[str, Any]) -> dict[str, Any]:
    method = as_dict(body.get("method"))
    kind = str(method.get("type", "supervised"))
    section = as_dict(method.get(kind))
    given = as_dict(section.get("hyperparameters") or body.get("hyperparameters"))
    defaults = {**DEFAULTS, "beta": 0.1} if kind == "dpo" else DEFAULTS
    hyper = {k: v if (v := given.get(k, "auto")) != "auto" else d for k, d in defaults.items()}
    return {"type": kind, kind: {"hyperparameters": hyper}}


def event(
    job: Job, at: float, message: str, level: str = "info", data: dict[str, Any] | None = None
) -> None:
    job.events.append(
        {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{job.id[6:]}{len(job.events):04d}",
            "created_at": int(at),
            "level": level,
            "message": message,
            "data": data or {},
            "type": "metrics" if data else "message",
        }
    )


def fail(job: Job, at: float, error: dict[str, Any]) -> None:
    job.status, job.error, job.finished_at = "failed", error, int(at)
    event(job, at, error["message"], "error")


def train(job: Job, at: float, tick: int) -> None:
    for step in range(2 * tick - 5, 2 * tick - 3):
        loss, acc = loss_at(step)
        data: dict[str, Any] = {"step": step, "train_loss": loss, "train_mean_token_accuracy": acc}
        data["total_steps"] = TOTAL_STEPS
        event(job, at, f"Step {step}/{TOTAL_STEPS}: training loss={loss:.2f}", data=data)
    step = 2 * tick - 4
    if tick > 2 + RUN_TICKS - 3:
        job.checkpoints.append(checkpoint(job, at, step))
        event(job, at, f"Checkpoint created at step {step}")


def checkpoint(job: Job, at: float, step: int) -> dict[str, Any]:
    """The checkpoint saved at `step`: its metrics as OpenAI gives them (the validation ones
    only with a validation file; the full-set loss rises after step 8, so the last
    checkpoint is not the best one)."""
    loss, acc = loss_at(step)
    metrics: dict[str, Any] = {"step": step, "train_loss": loss, "train_mean_token_accuracy": acc}
    if job.validation_file:
        vloss, vacc = loss_at(step, True)
        full = round(vloss + (0.05 * (step - 8) if step > 8 else 0.0), 4)
        metrics |= {"valid_loss": vloss, "valid_mean_token_accuracy": vacc,
                    "full_valid_loss": full,
                    "full_valid_mean_token_accuracy": round(1 - full / 3, 4)}
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": f"ftckpt-{job.id[6:]}{step:04d}",
        "created_at": int(at),
        "fine_tuned_model_checkpoint": f"{job.model_name()}:ckpt-step-{step}",
        "fine_tuning_job_id": job.id,
        "metrics": metrics,
        "step_number": step,
    }


def results_csv(job: Job) -> bytes:
    rows = [CSV_HEADER]
    for step in range(1, TOTAL_STEPS + 1):
        loss, acc = loss_at(step)
        vloss, vacc = loss_at(step, True) if job.validation_file else ("", "")
        rows.append(f"{step},{loss},{acc},{vloss},{vacc}")
    return ("\n".join(rows) + "\n").encode()


def succeed(job: Job, at: float, state: FakeOpenAIState) -> None:
    result = StoredFile(
        state.next_id("file-"), "step_metrics.csv", "fine-tune-results", int(at), results_csv(job)
    )
    state.files.add(result)
    job.status, job.finished_at, job.result_files = "succeeded", int(at), [result.id]
    job.fine_tuned_model = job.model_name()
    event(job, at, f"New fine-tuned model created: {job.fine_tuned_model}")
    event(job, at, "The job has successfully completed")


def tick(job: Job, number: int, state: FakeOpenAIState) -> None:
    at = job.created + number * state.finetune_step_seconds
    if number == 1 and job.problem is not None:
        fail(job, at, job.problem)
    elif number == 1:
        job.status = "queued"
        event(job, at, "Files validated, moving job to queued state")
    elif number == 2:
        job.status = "running"
        event(job, at, "Fine-tuning job started")
    elif number == 4 and job.suffix == "fail":
        fail(
            job,
            at,
            {
                "code": "training_failed",
                "message": "Fine-tuning failed during training.",
                "param": None,
            },
        )
    elif number <= 2 + RUN_TICKS:
        train(job, at, number)
    else:
        succeed(job, at, state)


def advance(state: FakeOpenAIState) -> None:
    """Apply every tick that is due, for every job."""
    now, step = state.clock(), max(state.finetune_step_seconds, 1e-6)
    for job in state.jobs.values():
        due = int((now - job.created) / step)
        while job.ticks < due and job.status not in TERMINAL:
            job.ticks += 1
            tick(job, job.ticks, state)


def fine_tuned_models(state: FakeOpenAIState) -> list[Job]:
    advance(state)
    return [job for job in state.jobs.values() if job.status == "succeeded"]


def _validate_files(
    body: dict[str, Any], state: FakeOpenAIState, method: str
) -> Response | dict[str, Any] | None:
    model = str(body.get("model"))
    problem = None
    for param in ("training_file", "validation_file"):
        file_id = body.get(param)
        if file_id is None and param == "validation_file":
            continue
        stored = state.files.get(str(file_id))
        if stored is None:
            return openai_error(
                400, f"invalid {param}: {file_id}", param=param, code="invalid_file_id"
            )
        problem = problem or file_problem(stored.content, method, model, param)
    return problem


def _new_job(
    body: dict[str, Any], state: FakeOpenAIState, method: dict[str, Any], problem: Any
) -> Job:
    training = state.files.get(str(body["training_file"]))
    suffix = body.get("suffix")
    seed = body.get("seed")
    code = "".join(state.rng.choice(string.ascii_letters + string.digits) for _ in range(6))
    return Job(
        id=state.next_id("ftjob-"),
        created=state.clock(),
        model=str(body["model"]),
        training_file=str(body["training_file"]),
        validation_file=body.get("validation_file"),
        suffix=suffix if isinstance(suffix, str) and suffix else None,
        seed=seed if isinstance(seed, int) else state.rng.randrange(2**31),
        method=method,
        metadata=body.get("metadata"),
        code=code,
        problem=problem,
        tokens=max(1, word_count(training.content.decode("utf-8", "replace"))) if training else 1,
    )


async def create_job(call: Call, state: FakeOpenAIState) -> Response:
    body = call.data
    for param in ("model", "training_file"):
        if not isinstance(body.get(param), str):
            return openai_error(400, f"Missing required parameter: '{param}'.", param=param)
    method = resolve_method(body)
    if method["type"] not in ("supervised", "dpo"):
        return openai_error(400, f"Unsupported method type: {method['type']}", param="method.type")
    problem = _validate_files(body, state, method["type"])
    if isinstance(problem, Response):
        return problem
    job = _new_job(body, state, method, problem)
    state.jobs[job.id] = job
    event(job, job.created, f"Created fine-tuning job: {job.id}")
    event(job, job.created, f"Validating training file: {job.training_file}")
    return json_response(job.to_json())


def _job(call: Call, state: FakeOpenAIState) -> Job | Response:
    advance(state)
    job_id = call.request.path_params["job_id"]
    job = state.jobs.get(job_id)
    if job is None:
        return openai_error(404, f"Could not find fine tune job: {job_id}", param="fine_tune_id")
    return job


async def list_jobs(call: Call, state: FakeOpenAIState) -> Response:
    advance(state)
    params = call.request.query_params
    items = [job.to_json() for job in reversed(state.jobs.values())]
    return json_response(
        cursor_page(items, params.get("after"), int_param(params.get("limit"), 20))
    )


async def retrieve_job(call: Call, state: FakeOpenAIState) -> Response:
    job = _job(call, state)
    return job if isinstance(job, Response) else json_response(job.to_json())


async def cancel_job(call: Call, state: FakeOpenAIState) -> Response:
    job = _job(call, state)
    if isinstance(job, Response):
        return job
    if job.status in TERMINAL:
        return openai_error(400, f"Job has already completed: {job.id}", param="fine_tune_id")
    job.status = "cancelled"
    event(job, state.clock(), "Fine-tuning job cancelled")
    return json_response(job.to_json())


async def list_events(call: Call, state: FakeOpenAIState) -> Response:
    job = _job(call, state)
    if isinstance(job, Response):
        return job
    params = call.request.query_params
    items = list(reversed(job.events))
    return json_response(
        cursor_page(items, params.get("after"), int_param(params.get("limit"), 20))
    )


async def list_checkpoints(call: Call, state: FakeOpenAIState) -> Response:
    job = _job(call, state)
    if isinstance(job, Response):
        return job
    params = call.request.query_params
    items = list(reversed(job.checkpoints))
    return json_response(
        cursor_page(items, params.get("after"), int_param(params.get("limit"), 10))
    )
