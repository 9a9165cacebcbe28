"""Where a fine-tuned model is served: what a route's target needs to point at it.

`tuneloop promote --model M --base-url B --api-key-env V` (or `client.promote(...)`) takes
these values; the proxy then sends the alias's traffic to `B` with the key in `V`, read from
the proxy's environment when the route is used (never from a request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from exporter.providers.base import JobInfo


def no_model_yet(job: JobInfo) -> str:
    """Why a job has no model to serve, by its state: failed and cancelled jobs never will."""
    if job.status == "failed":
        return (f"job {job.id} failed: it has no model to serve (`tuneloop jobs show {job.id}` "
                "has its error; start a new job)")
    if job.status == "cancelled":
        return f"job {job.id} was cancelled: it has no model to serve (start a new job)"
    return (f"job {job.id} is {job.status}: it has no model to serve yet (`tuneloop jobs "
            f"follow {job.id}` waits for it)")


@dataclass(frozen=True)
class ServedModel:
    model: str
    base_url: str | None  # None: the proxy's default upstream
    api_key_env: str | None  # None: the default upstream's key
    provider: str = "openai"  # the route target's provider (OpenAI-compatible server)

    def promote_args(self) -> dict[str, Any]:
        """Keyword arguments of `AdminClient.promote` for this model."""
        return {"provider": self.provider, "base_url": self.base_url,
                "api_key_env": self.api_key_env}


class Deployable(Protocol):
    def deploy(self, job: JobInfo) -> ServedModel:
        """Make a succeeded job's model servable (when the provider needs a step for it) and
        say where a route reaches it."""
        ...
