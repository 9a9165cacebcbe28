"""A fake Fireworks AI: datasets, supervised fine-tuning jobs (LoRA), deployed models and the
OpenAI-compatible inference, built from Fireworks' API reference
(https://docs.fireworks.ai/api-reference).

Control plane under ``/v1/accounts/{account}`` (errors as ``{"code", "message", "details"}``),
inference under ``/inference/v1``; every route needs ``Authorization: Bearer
<state.api_key>`` and is recorded in ``state.requests``. A dataset is UPLOADING until its
file is uploaded, then READY. A job advances one state each time it is read:

    JOB_STATE_CREATING -> JOB_STATE_PENDING -> JOB_STATE_VALIDATING (or JOB_STATE_FAILED: a
    line without "messages") -> JOB_STATE_RUNNING (50%, 100%) -> JOB_STATE_WRITING_RESULTS
    -> JOB_STATE_COMPLETED

``displayName == "fail"`` fails it while running; ``:cancel`` makes it JOB_STATE_CANCELLED.

A completed job's output model is loaded by ``POST .../deployedModels`` (409 when it has one
already), which answers it DEPLOYING; each ``GET .../deployedModels/{id}`` reads it one step
further, DEPLOYED at the ``state.deploy_reads``-th read (``state.deploy_failure`` set: an
error status instead). ``GET .../models/{id}`` lists the model's ``deployedModelRefs``. The
inference API answers chat for the model only once it is DEPLOYED (``state.deployed``), 404
before, as Fireworks answers a model not deployed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.routing import Route

from . import openai_chat
from .common import Call, FakeApp, FakeStateBase, health, json_response
from .together_finetune import file_problem
from .trainer_common import keyed_routes, read_job, stamp

BASE_MODELS = ("accounts/fireworks/models/llama-v3p1-8b-instruct",
               "accounts/fireworks/models/qwen3-8b")
STATES = ("JOB_STATE_CREATING", "JOB_STATE_PENDING", "JOB_STATE_VALIDATING",
          "JOB_STATE_RUNNING", "JOB_STATE_RUNNING", "JOB_STATE_WRITING_RESULTS",
          "JOB_STATE_COMPLETED")
TERMINAL = ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 500: 13, 503: 14}


def error_body(status: int, message: str | None) -> dict[str, Any]:
    return {"code": GRPC.get(status, 2), "message": message or f"fake Fireworks {status}",
            "details": []}


def error(status: int, message: str) -> Response:
    return json_response(error_body(status, message), status)


@dataclass
class SftJob:
    name: str
    body: dict[str, Any]
    problem: str | None
    create_time: str
    ticks: int = 0
    state: str = "JOB_STATE_CREATING"
    message: str = ""
    completed: str | None = None

    def to_json(self) -> dict[str, Any]:
        running = STATES.index(self.state) - 2 if self.state in STATES[3:5] else 0
        return {**self.body, "name": self.name, "state": self.state,
                "status": {"code": "OK" if not self.message else "INTERNAL",
                           "message": self.message},
                "createTime": self.create_time, "completedTime": self.completed,
                "jobProgress": {"percent": 100 if self.state in TERMINAL else 50 * running}}


@dataclass
class DeployedModel:
    name: str
    model: str
    serverless: bool
    create_time: str
    reads: int = 0
    state: str = "DEPLOYING"
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "serverless": self.serverless,
                "state": self.state, "createTime": self.create_time,
                "status": {"code": "INTERNAL" if self.message else "OK",
                           "message": self.message}}


@dataclass
class FakeFireworksState(FakeStateBase):
    api_key: str = "fireworks-test-key"
    account: str = "tuneloop-fake"
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, SftJob] = field(default_factory=dict)
    deployed_models: dict[str, DeployedModel] = field(default_factory=dict)  # by id
    deployed: set[str] = field(default_factory=set)  # the models inference serves
    deploy_reads: int = 2  # reads of a deployed model until it is DEPLOYED
    deploy_failure: str | None = None  # the error a deployment ends with instead


def tick(job: SftJob) -> None:
    job.ticks += 1
    if job.ticks == 2 and job.problem:
        job.state, job.message = "JOB_STATE_FAILED", job.problem
    elif job.ticks == 4 and job.body.get("displayName") == "fail":
        job.state, job.message = "JOB_STATE_FAILED", "training diverged: loss is NaN"
    else:
        job.state = STATES[min(job.ticks, len(STATES) - 1)]
    if job.state in TERMINAL:
        job.completed = stamp()


def _account(call: Call, state: FakeFireworksState) -> Response | None:
    account = call.request.path_params["account"]
    return None if account == state.account else error(403, f"no access to account {account}")


async def create_dataset(call: Call, state: FakeFireworksState) -> Response:
    body = call.data
    dataset_id = body.get("datasetId")
    if not isinstance(dataset_id, str) or not isinstance(body.get("dataset"), dict):
        return error(400, "datasetId and dataset are required")
    if dataset_id in state.datasets:
        return error(409, f"dataset {dataset_id} already exists")
    name = f"accounts/{state.account}/datasets/{dataset_id}"
    state.datasets[dataset_id] = {**body["dataset"], "name": name, "state": "UPLOADING",
                                  "createTime": stamp(), "content": b""}
    return json_response(_public(state.datasets[dataset_id]))


def _public(dataset: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dataset.items() if k != "content"}


async def get_dataset(call: Call, state: FakeFireworksState) -> Response:
    dataset = state.datasets.get(call.request.path_params["dataset_id"])
    if dataset is None:
        return error(404, f"dataset {call.request.path_params['dataset_id']} not found")
    return json_response(_public(dataset))


async def upload_dataset(call: Call, state: FakeFireworksState) -> Response:
    dataset = state.datasets.get(call.request.path_params["dataset_id"])
    if dataset is None:
        return error(404, f"dataset {call.request.path_params['dataset_id']} not found")
    upload = (await call.request.form()).get("file")
    if not isinstance(upload, UploadFile):
        return error(400, "file is required (multipart/form-data)")
    dataset["content"], dataset["state"] = await upload.read(), "READY"
    return json_response({"filenameToSignedUrls": {}})


async def create_job(call: Call, state: FakeFireworksState) -> Response:
    body = call.data
    if body.get("baseModel") not in BASE_MODELS:
        return error(400, f"base model {body.get('baseModel')!r} is not tunable")
    if not isinstance(body.get("outputModel"), str):
        return error(400, "outputModel is required")
    datasets = []
    for key in ("dataset", "evaluationDataset"):
        if body.get(key) is None and key == "evaluationDataset":
            continue
        dataset = state.datasets.get(str(body.get(key)).rsplit("/", 1)[-1])
        if dataset is None or dataset["state"] != "READY":
            return error(400, f"{key} {body.get(key)} is not a READY dataset")
        datasets.append(dataset)
    job_id = state.next_id("", 16)
    job = SftJob(f"accounts/{state.account}/supervisedFineTuningJobs/{job_id}", dict(body),
                 file_problem(datasets[0]["content"]), stamp())
    state.jobs[job_id] = job
    return json_response(job.to_json())


def _job(call: Call, state: FakeFireworksState) -> SftJob | Response:
    job_id = call.request.path_params["job_id"]
    return state.jobs.get(job_id) or error(404, f"supervisedFineTuningJob {job_id} not found")


async def get_job(call: Call, state: FakeFireworksState) -> Response:
    job = _job(call, state)
    job = read_job(job, isinstance(job, Response) or job.state in TERMINAL, tick)
    return job if isinstance(job, Response) else json_response(job.to_json())


async def list_jobs(call: Call, state: FakeFireworksState) -> Response:
    jobs = [j.to_json() for j in reversed(state.jobs.values())]
    return json_response({"supervisedFineTuningJobs": jobs, "nextPageToken": "",
                          "totalSize": len(jobs)})


async def cancel_job(call: Call, state: FakeFireworksState) -> Response:
    job = _job(call, state)
    if isinstance(job, Response):
        return job
    if job.state in TERMINAL:
        return error(400, f"job is {job.state}")
    job.state, job.completed = "JOB_STATE_CANCELLED", stamp()
    return json_response({})


async def deploy_model(call: Call, state: FakeFireworksState) -> Response:
    model = call.data.get("model")
    done = {j.body["outputModel"] for j in state.jobs.values()
            if j.state == "JOB_STATE_COMPLETED"}
    if model not in done:
        return error(400, f"model {model!r} is not a completed fine-tuned model")
    if any(d.model == model for d in state.deployed_models.values()):
        return error(409, f"{model} is already deployed")
    deployed_id = state.next_id("", 12)
    deployed = DeployedModel(f"accounts/{state.account}/deployedModels/{deployed_id}",
                             str(model), bool(call.data.get("serverless")), stamp())
    state.deployed_models[deployed_id] = deployed
    return json_response(deployed.to_json())


def tick_deployed(deployed: DeployedModel, state: FakeFireworksState) -> None:
    """One read further: DEPLOYED (or failed) at the `deploy_reads`-th read."""
    if deployed.state != "DEPLOYING":
        return
    deployed.reads += 1
    if deployed.reads < state.deploy_reads:
        return
    if state.deploy_failure:
        deployed.state, deployed.message = "UNDEPLOYING", state.deploy_failure
    else:
        deployed.state = "DEPLOYED"
        state.deployed.add(deployed.model)


async def get_deployed_model(call: Call, state: FakeFireworksState) -> Response:
    deployed_id = call.request.path_params["deployed_id"]
    deployed = state.deployed_models.get(deployed_id)
    if deployed is None:
        return error(404, f"deployedModel {deployed_id} not found")
    tick_deployed(deployed, state)
    return json_response(deployed.to_json())


async def get_model(call: Call, state: FakeFireworksState) -> Response:
    name = f"accounts/{state.account}/models/{call.request.path_params['model_id']}"
    if not any(j.body["outputModel"] == name for j in state.jobs.values()):
        return error(404, f"model {name} not found")
    refs = [{"name": d.name, "state": d.state} for d in state.deployed_models.values()
            if d.model == name]
    return json_response({"name": name, "state": "READY", "deployedModelRefs": refs})


async def chat_completions(call: Call, state: FakeFireworksState) -> Response:
    model = call.data.get("model")
    if model not in set(BASE_MODELS) | state.deployed:
        body = {"error": {"object": "error", "type": "invalid_request_error",
                          "code": "NOT_FOUND", "message": f"Model not found, inaccessible, "
                          f"and/or not deployed: {model}"}}
        return json_response(body, 404)
    return await openai_chat.chat_completions(call, state)


def unkeyed(call: Call, state: FakeFireworksState) -> Response | None:
    if call.request.headers.get("authorization") != f"Bearer {state.api_key}":
        return error(401, "unauthenticated: invalid API key")
    return None


def refused(call: Call, state: FakeFireworksState) -> Response | None:
    """The control plane also needs the account to be the key's."""
    return unkeyed(call, state) or _account(call, state)


def create_app(state: FakeFireworksState | None = None) -> Starlette:
    state = state if state is not None else FakeFireworksState()
    root = "/v1/accounts/{account}"
    table = ((f"{root}/datasets", create_dataset, ["POST"]),
             (f"{root}/datasets/{{dataset_id}}:upload", upload_dataset, ["POST"]),
             (f"{root}/datasets/{{dataset_id}}", get_dataset, ["GET"]),
             (f"{root}/supervisedFineTuningJobs", create_job, ["POST"]),
             (f"{root}/supervisedFineTuningJobs", list_jobs, ["GET"]),
             (f"{root}/supervisedFineTuningJobs/{{job_id}}:cancel", cancel_job, ["POST"]),
             (f"{root}/supervisedFineTuningJobs/{{job_id}}", get_job, ["GET"]),
             (f"{root}/deployedModels", deploy_model, ["POST"]),
             (f"{root}/deployedModels/{{deployed_id}}", get_deployed_model, ["GET"]),
             (f"{root}/models/{{model_id}}", get_model, ["GET"]))
    routes = keyed_routes(state, table, error_body, refused)
    routes += keyed_routes(state, [("/inference/v1/chat/completions", chat_completions,
                                    ["POST"])], error_body, unkeyed)
    app = FakeApp([Route("/health", health, methods=["GET"]), *routes])
    app.state.fake = state
    return app
