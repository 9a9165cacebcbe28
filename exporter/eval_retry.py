"""One evaluation request through the proxy, retried after 429, 5xx and connection failures
with exponential backoff (honouring `retry-after`); other errors are final. A request that
failed without reaching the model (still 429/5xx/unreachable after the retries, or 404: no
such model served) is marked `unreachable`: no answer of the model's, unlike a 400 (a
content filter, a prompt too long), which is."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import openai

RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)
NOT_FOUND = 404  # the model is not served there (not deployed yet, a wrong name)


class RetryPolicy(Protocol):
    @property
    def retries(self) -> int: ...
    @property
    def backoff_s(self) -> float: ...
    @property
    def max_backoff_s(self) -> float: ...


@dataclass(frozen=True)
class Reply:
    raw: Any | None  # the SDK's raw response, None when the request failed
    error: str | None
    interaction_id: str | None
    retries: int
    unreachable: bool = False  # failed before the model could answer (see the docstring)


def retry_delay(attempt: int, error: Exception, policy: RetryPolicy) -> float:
    delay = policy.backoff_s * 2**attempt * (0.5 + random.random() / 2)
    response = getattr(error, "response", None)
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after:
        with contextlib.suppress(ValueError):
            delay = max(delay, float(retry_after))
    return min(delay, policy.max_backoff_s)


async def send(create: Callable[[], Awaitable[Any]], policy: RetryPolicy) -> Reply:
    """Call `create` (an SDK `with_raw_response.create(...)` bound to its arguments)."""
    error: Exception | None = None
    for attempt in range(policy.retries + 1):
        try:
            raw = await create()
        except RETRYABLE as exc:
            error = exc
            if attempt < policy.retries:
                await asyncio.sleep(retry_delay(attempt, exc, policy))
            continue
        except openai.APIStatusError as exc:
            return Reply(None, f"{exc.status_code}: {exc.message}"[:500],
                         exc.response.headers.get("x-tuneloop-id"), attempt,
                         unreachable=exc.status_code == NOT_FOUND)
        return Reply(raw, None, raw.headers.get("x-tuneloop-id"), attempt)
    return Reply(None, f"gave up after {policy.retries + 1} attempts: {error}"[:500], None,
                 policy.retries, unreachable=True)
