"""Providers that do not speak OpenAI's API, reached through litellm and translated to and from
the OpenAI shape (chat completions only), streaming included.

litellm is imported lazily in a thread (its import takes seconds); `LITELLM_LOCAL_MODEL_COST_MAP`
keeps it from fetching its price map from the internet.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import orjson

from tuneloop.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable

JSON = "application/json"
SSE = "text/event-stream"


class LitellmReply:
    def __init__(self, status: int, body: bytes | None = None,
                 stream: AsyncIterator[Any] | None = None):
        self.status = status
        self._body = body
        self._stream = stream
        self.headers = [("content-type", SSE if stream is not None else JSON)]

    @property
    def content_type(self) -> str:
        return self.headers[0][1]

    @property
    def content_encoding(self) -> str:
        return ""

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._stream is None:
            yield self._body or b""
            return
        async for chunk in self._stream:
            data = chunk.model_dump(exclude_none=True) if hasattr(chunk, "model_dump") else chunk
            yield b"data: " + orjson.dumps(data) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        self._stream = None


class LitellmUpstream:
    def __init__(self) -> None:
        self._module: ModuleType | None = None
        self._lock = asyncio.Lock()

    async def module(self) -> ModuleType:
        async with self._lock:
            if self._module is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                module = await asyncio.to_thread(importlib.import_module, "litellm")
                module.drop_params = True  # type: ignore[attr-defined]
                module.suppress_debug_info = True  # type: ignore[attr-defined]
                self._module = module
        return self._module

    async def send(self, endpoint: str, provider: str, model: str, payload: dict[str, Any],
                   api_base: str | None, api_key: str | None, connect_timeout_s: float,
                   read_timeout_s: float) -> LitellmReply:
        if endpoint != "chat.completions":
            raise BadRequest(
                f"provider {provider!r} is reached through litellm, which tuneloop uses for "
                f"chat completions only, not {endpoint}", code="unsupported_endpoint",
            )
        litellm = await self.module()
        params = {k: v for k, v in payload.items() if k not in ("model", "metadata")}
        stream = bool(params.pop("stream", False))
        try:
            result = await litellm.acompletion(
                model=f"{provider}/{model}", stream=stream, api_base=api_base, api_key=api_key,
                timeout=read_timeout_s, **params,
            )
        except Exception as exc:
            return self._error(exc, litellm)
        if stream:
            return LitellmReply(200, stream=result)
        return LitellmReply(200, body=orjson.dumps(result.model_dump(exclude_none=True)))

    @staticmethod
    def _error(exc: Exception, litellm: ModuleType) -> LitellmReply:
        if isinstance(exc, litellm.Timeout):
            raise UpstreamTimeout(f"the provider did not answer in time: {exc}") from exc
        if isinstance(exc, litellm.APIConnectionError):
            raise UpstreamUnreachable(f"could not reach the provider: {exc}") from exc
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int) or not 400 <= status <= 599:
            status = 502
        body = {"error": {"message": str(exc), "type": type(exc).__name__, "param": None,
                          "code": getattr(exc, "code", None) or status}}
        return LitellmReply(status, body=orjson.dumps(body))
