"""What the fine-tuning providers without an SDK in our venv (Together, Fireworks) share: a
JSON-over-HTTP client (bearer key, one error translation, every error naming the request it
tried: method and URL, never the key), the checks both make before anything is uploaded, and
`start` (check, upload, create), so each provider module holds only its own API's shapes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from exporter.exportdir import ExportDir
from exporter.providers.base import JobInfo, JobSpec, TransientProviderError, UploadedFiles
from exporter.providers.serving import no_model_yet
from tuneloop.errors import (
    DatasetError,
    NotFound,
    ProviderError,
    ProviderOptionRefused,
)

Files = Mapping[str, tuple[str, bytes, str]]


class AlreadyExists(ProviderError):
    """409: the resource (a dataset, a deployed model) exists already."""

    code = "provider_conflict"


def _message(response: httpx.Response) -> str:
    """The provider's own words: `{"error": {"message"}}`, `{"message"}` (Google-style
    APIs), `{"error": "..."}`, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    return str(body)[:300]


class JsonApi:
    """Calls under `base_url` with `Authorization: Bearer <key>`; answers parsed JSON."""

    def __init__(self, label: str, base_url: str, key: str, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        self.label = label
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0),
                                 headers={"authorization": f"Bearer {key}"},
                                 transport=transport)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, what: str, *, json: Any = None,
             params: Mapping[str, Any] | None = None, files: Files | None = None,
             data: Mapping[str, str] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        tried = f"{what} ({method} {url})"
        try:
            response = self.http.request(method, url, json=json, params=params, files=files,
                                         data=data)
        except httpx.TransportError as exc:
            raise TransientProviderError(
                f"{tried}: {self.label} unreachable: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 400:
            try:
                return response.json() if response.content else {}
            except ValueError as exc:
                raise ProviderError(f"{tried}: {self.label} answered {status} with a body "
                                    "that is not JSON") from exc
        message = _message(response)
        if status == 404:
            raise NotFound(f"{tried}: {self.label} says not found: {message}")
        if status == 409:
            raise AlreadyExists(f"{tried}: {self.label} says it exists: {message}")
        if status == 429 or status >= 500:
            raise TransientProviderError(f"{tried}: {self.label} answered {status}: {message}")
        raise ProviderError(f"{tried}: {self.label} refused ({status}): {message}")


def epoch(value: Any) -> int | None:
    """Seconds since 1970 from an RFC 3339 time (`2024-05-17T17:35:45.123Z`) or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str) or not value:
        return None
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def check_chat_export(export: ExportDir, spec: JobSpec, provider: str) -> None:
    """Together and Fireworks train here on chat exports with supervised learning."""
    if export.format != "chat" or spec.method != "supervised":
        raise ProviderOptionRefused(
            f"{provider} fine-tuning through tuneloop takes chat exports with supervised "
            f"training (method sft); {export.path} is a {export.format} export for "
            f"{spec.method!r}: export with --format chat, or use --provider openai")


def check_spec(spec: JobSpec, provider: str, hyperparameters: Iterable[str]) -> None:
    """Refuse what the provider can't take (other hyperparameters than `hyperparameters`, a
    seed), before anything is uploaded."""
    allowed = list(hyperparameters)
    unknown = sorted(set(spec.hyperparameters) - set(allowed))
    if unknown:
        raise ProviderOptionRefused(
            f"{provider} takes {', '.join(allowed)} (an absolute learning rate, not OpenAI's "
            f"multiplier); not {', '.join(unknown)}")
    if spec.seed is not None:
        owner = f"{provider}'" if provider.endswith("s") else f"{provider}'s"
        raise ProviderOptionRefused(f"{owner} fine-tuning API takes no seed; leave --seed "
                                  f"out with --provider {provider.lower()}")


def servable(job: JobInfo) -> str:
    """The model a finished job made; DatasetError while it has none."""
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise DatasetError(no_model_yet(job))
    return job.fine_tuned_model


class HttpTrainer:
    """`start` for a provider with `label`, `hyperparameters`, `upload` and `create`."""

    label: str
    hyperparameters: Iterable[str]

    def upload(self, training: Path, validation: Path | None) -> UploadedFiles:
        raise NotImplementedError

    def create(self, files: UploadedFiles, spec: JobSpec) -> JobInfo:
        raise NotImplementedError

    def check(self, spec: JobSpec) -> None:
        check_spec(spec, self.label, self.hyperparameters)

    def start(self, export: ExportDir, spec: JobSpec) -> JobInfo:
        check_chat_export(export, spec, self.label)
        self.check(spec)
        return self.create(self.upload(export.train, export.validation), spec)
