"""Fake OpenAI upstream for tests and benchmarks.

Routes (all under /v1, recorded in ``state.requests`` unless ``state.record`` is False):
chat/completions, completions, responses, embeddings, models, files, fine_tuning/jobs;
anything else under /v1 echoes the request back as JSON. ``GET /health`` is never recorded.
Failure injection is described in :mod:`tests.fakes.common`.

CLI (benchmarks): ``python -m tests.fakes.openai_upstream --port 9100 --latency-ms 50 --no-record``.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from . import openai_chat, openai_files, openai_finetune, openai_responses
from .common import (
    ALL_METHODS,
    Call,
    FakeApp,
    FakeStateBase,
    RawHeaders,
    bind,
    echo,
    endpoint,
    health,
    json_response,
)
from .openai_common import openai_error, openai_error_body
from .openai_files import FileStore
from .openai_finetune import Job

BASE_MODELS = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "davinci-002", "text-embedding-3-small")
BASE_CREATED = 1_721_172_741
HOT_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings")


@dataclass
class FakeOpenAIState(FakeStateBase):
    """Everything the fake OpenAI remembers; pass it to :func:`create_app`."""

    files: FileStore = field(default_factory=FileStore)
    jobs: dict[str, Job] = field(default_factory=dict)
    finetune_step_seconds: float = 0.3
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def reset(self) -> None:
        """Forget requests, programmed failures, files and jobs."""
        super().reset()
        self.files.files.clear()
        self.jobs.clear()


OpenAIHandler = Callable[[Call, FakeOpenAIState], Awaitable[Response]]


def response_headers(state: FakeStateBase) -> Callable[[], RawHeaders]:
    static: RawHeaders = [
        (b"x-ratelimit-limit-requests", b"10000"),
        (b"x-ratelimit-remaining-requests", b"9999"),
    ]

    def headers() -> RawHeaders:
        request_id = f"req_{next(state.counter):032x}".encode()
        processing = str(int(state.latency_ms)).encode()
        return [(b"x-request-id", request_id), (b"openai-processing-ms", processing), *static]

    return headers


def _model(model_id: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def all_models(state: FakeOpenAIState) -> list[dict[str, Any]]:
    models = [_model(m, BASE_CREATED, "system") for m in BASE_MODELS]
    for job in openai_finetune.fine_tuned_models(state):
        models.append(_model(job.fine_tuned_model or "", job.finished_at or 0, "tuneloop-fake"))
    return models


async def list_models(call: Call, state: FakeOpenAIState) -> Response:
    return json_response({"object": "list", "data": all_models(state)})


async def retrieve_model(call: Call, state: FakeOpenAIState) -> Response:
    model_id = call.request.path_params["model_id"]
    for model in all_models(state):
        if model["id"] == model_id:
            return json_response(model)
    message = f"The model '{model_id}' does not exist"
    return openai_error(404, message, param="model", code="model_not_found")


def _table() -> Sequence[tuple[str, OpenAIHandler, Sequence[str]]]:
    ft = openai_finetune
    return (
        ("/v1/chat/completions", openai_chat.chat_completions, ["POST"]),
        ("/v1/completions", openai_chat.completions, ["POST"]),
        ("/v1/responses", openai_responses.responses, ["POST"]),
        ("/v1/embeddings", openai_responses.embeddings, ["POST"]),
        ("/v1/models", list_models, ["GET"]),
        ("/v1/models/{model_id}", retrieve_model, ["GET"]),
        ("/v1/files", openai_files.create_file, ["POST"]),
        ("/v1/files", openai_files.list_files, ["GET"]),
        ("/v1/files/{file_id}", openai_files.retrieve_file, ["GET"]),
        ("/v1/files/{file_id}", openai_files.delete_file, ["DELETE"]),
        ("/v1/files/{file_id}/content", openai_files.file_content, ["GET"]),
        ("/v1/fine_tuning/jobs", ft.create_job, ["POST"]),
        ("/v1/fine_tuning/jobs", ft.list_jobs, ["GET"]),
        ("/v1/fine_tuning/jobs/{job_id}", ft.retrieve_job, ["GET"]),
        ("/v1/fine_tuning/jobs/{job_id}/cancel", ft.cancel_job, ["POST"]),
        ("/v1/fine_tuning/jobs/{job_id}/events", ft.list_events, ["GET"]),
        ("/v1/fine_tuning/jobs/{job_id}/checkpoints", ft.list_checkpoints, ["GET"]),
        ("/v1/{rest:path}", echo, ALL_METHODS),
    )


def create_app(state: FakeOpenAIState | None = None) -> Starlette:
    """The fake OpenAI ASGI app; its state is ``app.state.fake``."""
    state = state if state is not None else FakeOpenAIState()
    headers = response_headers(state)
    routes = [
        Route(
            path,
            endpoint(state, bind(handler, state), openai_error_body, headers),
            methods=methods,
        )
        for path, handler, methods in _table()
    ]
    app = FakeApp([Route("/health", health, methods=["GET"]), *routes], HOT_PATHS)
    app.state.fake = state
    return app


CONFIG_ENV = "TUNELOOP_FAKE_OPENAI_CONFIG"


def app_from_env() -> Starlette:
    """App factory for ``--workers`` > 1: each worker builds its own state from the env."""
    return create_app(FakeOpenAIState(**orjson.loads(os.environ.get(CONFIG_ENV, "{}"))))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake OpenAI upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--finetune-step-seconds", type=float, default=0.3)
    parser.add_argument("--no-record", action="store_true", help="keep no requests (benchmarks)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each with its own state")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    config = {
        "latency_ms": args.latency_ms,
        "chunk_delay_ms": args.chunk_delay_ms,
        "record": not args.no_record,
        "finetune_step_seconds": args.finetune_step_seconds,
    }
    os.environ[CONFIG_ENV] = orjson.dumps(config).decode()
    app: Starlette | str = create_app(FakeOpenAIState(**config))
    if args.workers > 1:
        app = f"{__spec__.name if __spec__ else __name__}:app_from_env"
    uvicorn.run(
        app,
        factory=args.workers > 1,
        workers=args.workers,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
