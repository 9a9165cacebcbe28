"""One interaction's record: what the client asked, what came back, and how it went.

Only the body, our own `x-tuneloop-*` values and the body's `metadata` are kept: no header, so
no key, cookie or auth header can reach storage.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.headers import ClientMeta
from proxy.pricing import PriceMap
from proxy.redaction import Redactor


def usage_tokens(response: Any) -> tuple[int | None, int | None]:
    if not isinstance(response, dict):
        return None, None
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if completion is None and prompt is not None:
        completion = 0  # embeddings
    return (prompt if isinstance(prompt, int) else None,
            completion if isinstance(completion, int) else None)


def cached_tokens(response: Any) -> int | None:
    """The prompt tokens the provider read from its prompt cache (chat and legacy:
    `usage.prompt_tokens_details`, responses: `usage.input_tokens_details`), priced lower."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    for key in ("prompt_tokens_details", "input_tokens_details"):
        details = usage.get(key)
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            return int(details["cached_tokens"])
    return None


def embeddings_summary(response: Any) -> Any:
    """Embedding vectors are not stored: only how many there were and their size."""
    if not isinstance(response, dict) or not isinstance(response.get("data"), list):
        return response
    dimensions: int | None = None
    for item in response["data"]:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            dimensions = len(vector)
        elif isinstance(vector, str):
            dimensions = len(base64.b64decode(vector)) // 4
        break
    summary = {k: v for k, v in response.items() if k != "data"}
    summary["data_count"] = len(response["data"])
    summary["dimensions"] = dimensions
    return summary


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


@dataclass
class Capture:
    interaction_id: str
    endpoint: str
    meta: ClientMeta
    request_body: bytes
    payload: dict[str, Any]
    stream: bool
    created_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    started: float = field(default_factory=time.perf_counter)
    upstream_model: str | None = None
    provider: str | None = None
    route: dict[str, Any] | None = None
    ttfb_ms: float | None = None
    sent_request: bytes | None = None
    """What the target received, when its transforms changed it (else None)."""
    client_key: str | None = None
    """Which client key sent the request (a digest, proxy/exchange.py `client_key`): spooled
    with the record, listed with the row for the search indexer's per-key lanes, not stored
    in `interactions` (a routed row's `route.client_key` says it there)."""
    logged: bool = False

    def first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = (time.perf_counter() - self.started) * 1000

    def record(self, *, status_code: int | None, response: Any, finish: str,
               error: str | None, prices: PriceMap, redactor: Redactor) -> dict[str, Any]:
        if self.endpoint == "embeddings":
            response = embeddings_summary(response)
        prompt_tokens, completion_tokens = usage_tokens(response)
        metadata = self.payload.get("metadata")
        request_text = self.request_body.decode("utf-8")
        model = self.payload.get("model")
        record = {
            "id": self.interaction_id,
            "created_at": self.created_us,
            "endpoint": self.endpoint,
            "model": model if isinstance(model, str) else None,
            "upstream_model": self.upstream_model,
            "provider": self.provider,
            "route": None if self.route is None else orjson.dumps(self.route).decode(),
            "traffic": self.meta.traffic,
            "request": request_text,
            "sent_request": None if self.sent_request is None
            else self.sent_request.decode("utf-8"),
            "response": None if response is None else orjson.dumps(response).decode(),
            "status_code": status_code,
            "finish": finish,
            "error": error,
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "ttfb_ms": None if self.ttfb_ms is None else round(self.ttfb_ms, 3),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": prices.cost(self.upstream_model, prompt_tokens, completion_tokens,
                                    cached_tokens(response)),
            "stream": self.stream,
            "tags": list(self.meta.tags),
            "user_id": self.meta.user,
            "session_id": self.meta.session,
            "source_id": self.meta.source,
            "metadata": None if metadata is None else orjson.dumps(metadata).decode(),
        }
        record = redactor.record(record)  # every stored string, when redaction is on
        record["client_key"] = self.client_key  # a digest already: nothing to redact
        return record
