"""Where a fine-tuned model is served: what a route's target needs to point at it.

`tuneloop promote --model M --base-url B --api-key-env V` (or `client.promote(...)`) takes
these values; the proxy then sends the alias's traffic to `B` with the key in `V`, read from
the proxy's environment when the route is used (never from a request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from exporter.providers.base import JobInfo


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
