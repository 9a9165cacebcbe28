"""One chat completion through the proxy, as synthetic traffic, with retry and backoff.

The official `openai.AsyncOpenAI` client points at the proxy's `/v1`; its own retries are off
so that every attempt is ours to count. 429, 5xx, timeouts and dropped connections are retried
with exponential backoff and jitter, waiting at least what `retry-after-ms` / `retry-after`
asks. Every attempt is logged by the proxy; the ids of failed ones are kept so the run can
close them in the review queue.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from exporter.synthesize.keys import SYNTHETIC_TAG
from tuneloop.errors import Forbidden, Unauthorized

ID_HEADER = "x-tuneloop-id"
MAX_RETRY_AFTER_S = 120.0
MAX_BACKOFF_S = 30.0
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Reply:
    interaction_id: str | None
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    failed_ids: tuple[str, ...] = ()  # attempts before this one that failed


@dataclass
class CallFailed(Exception):
    """Every attempt failed (or one failed in a way retrying can't fix)."""

    reason: str
    failed_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.reason


@dataclass
class CallStats:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    interaction_ids: list[str] = field(default_factory=list)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """What the server asks to wait: `retry-after-ms`, or `retry-after` in seconds or as a
    date; None when it asks nothing (or nonsense)."""
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(ms) / 1000))
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER_S, max(0.0, (when - datetime.now(UTC)).total_seconds()))


def backoff_seconds(attempt: int, base_s: float, retry_after: float | None,
                    rng: random.Random) -> float:
    """Exponential with full jitter over its upper half, never less than retry-after."""
    exponential = min(MAX_BACKOFF_S, base_s * (2 ** attempt))
    delay = exponential * (0.5 + rng.random() / 2)
    return max(delay, retry_after or 0.0)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)  # includes timeouts


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return f"HTTP {exc.status_code}: {message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


class ModelCaller:
    """Chat completions through the proxy; `semaphore` bounds the requests in flight."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, *, semaphore: asyncio.Semaphore,
                 retries: int, backoff_s: float, send_key: bool,
                 sleep: Sleep = asyncio.sleep, rng: random.Random | None = None):
        self.client = client
        self.model = model
        self.semaphore = semaphore
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.stats = CallStats()
        # without a key of our own the proxy uses its upstream key
        self._auth: dict[str, Any] = {} if send_key else {"Authorization": openai.Omit()}

    async def chat(self, prompt: str, tags: Sequence[str]) -> Reply:
        headers = {
            **self._auth,
            "x-tuneloop-traffic": SYNTHETIC_TAG,
            "x-tuneloop-tags": ",".join(dict.fromkeys(tags)),
        }
        failed: list[str] = []
        for attempt in range(self.retries + 1):
            try:
                async with self.semaphore:
                    self.stats.requests += 1
                    raw = await self.client.chat.completions.with_raw_response.create(
                        model=self.model, messages=[{"role": "user", "content": prompt}],
                        extra_headers=headers)
                return self._reply(raw.headers.get(ID_HEADER), raw.parse(), failed)
            except openai.APIStatusError as exc:
                if (interaction_id := exc.response.headers.get(ID_HEADER)) is not None:
                    failed.append(interaction_id)
                if exc.status_code == 401:
                    raise Unauthorized(f"the proxy or upstream refused the key: {exc.message}") \
                        from exc
                if exc.status_code == 403:
                    raise Forbidden(f"the proxy or upstream refused the call: {exc.message}") \
                        from exc
                error: Exception = exc
            except openai.APIConnectionError as exc:
                error = exc
            if not _retryable(error) or attempt == self.retries:
                tries = f"after {attempt + 1} attempts" if attempt else "at once"
                raise CallFailed(f"the model call failed {tries}: {_describe(error)}", failed)
            self.stats.retries += 1
            asked = error.response.headers if isinstance(error, openai.APIStatusError) else None
            await self.sleep(backoff_seconds(attempt, self.backoff_s,
                                             retry_after_seconds(asked), self.rng))
        raise AssertionError("unreachable")

    def _reply(self, interaction_id: str | None, completion: Any, failed: list[str]) -> Reply:
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        if interaction_id is not None:
            self.stats.interaction_ids.append(interaction_id)
        choice = completion.choices[0] if completion.choices else None
        return Reply(interaction_id, choice.message.content if choice else None,
                     choice.finish_reason if choice else None, prompt_tokens, completion_tokens,
                     tuple(failed))
