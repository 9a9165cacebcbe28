"""Providers that do not speak OpenAI's API, reached through litellm and translated to and from
the OpenAI shape (chat completions only), streaming included.

litellm is imported lazily in a thread (its import takes seconds); `LITELLM_LOCAL_MODEL_COST_MAP`
keeps it from fetching its price map from the internet.

Only the parameters OpenAI's API defines reach litellm (proxy/openai_params.py): the host, the key
and the headers come from the route and the settings, never from the request. A failure reaches
the client as a status and a short message (the provider's own error message at most), never
litellm's text, which can carry tracebacks, install paths and request details; the whole of it
goes to the server's log.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
from collections.abc import AsyncIterator
from types import MappingProxyType, ModuleType
from typing import Any

import orjson

from proxy.openai_params import litellm_params
from proxy.reply import UpstreamCut
from tuneloop.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable

log = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"


class LitellmReply:
    def __init__(self, status: int, body: bytes | None = None,
                 stream: AsyncIterator[Any] | None = None, provider: str = "",
                 timeout_error: type[Exception] | None = None):
        self.status = status
        self._body = body
        self._stream = stream
        self._provider = provider
        self._timeout_error = timeout_error
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
        try:
            async for chunk in self._stream:
                data = (chunk.model_dump(exclude_none=True) if hasattr(chunk, "model_dump")
                        else chunk)
                yield b"data: " + orjson.dumps(data) + b"\n\n"
        except Exception as exc:  # litellm's text stays in the log (tracebacks, paths)
            log.warning("provider %s stream failed: %s: %s", self._provider,
                        type(exc).__name__, exc)
            if self._timeout_error is not None and isinstance(exc, self._timeout_error):
                raise UpstreamTimeout(
                    f"the provider ({self._provider}) stopped answering mid-stream") from exc
            raise UpstreamCut(f"the provider ({self._provider}) stream failed") from exc
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
        params = litellm_params(endpoint, payload)
        litellm = await self.module()
        stream = params.pop("stream", False) is True
        try:
            result = await litellm.acompletion(
                model=f"{provider}/{model}", stream=stream, api_base=api_base, api_key=api_key,
                timeout=read_timeout_s, **params,
            )
        except Exception as exc:
            return self._error(exc, litellm, provider, api_key)
        if stream:
            return LitellmReply(200, stream=result, provider=provider,
                                timeout_error=litellm.Timeout)
        return LitellmReply(200, body=orjson.dumps(result.model_dump(exclude_none=True)))

    @staticmethod
    def _error(exc: Exception, litellm: ModuleType, provider: str,
               api_key: str | None) -> LitellmReply:
        log.warning("provider %s failed: %s: %s", provider, type(exc).__name__, exc)
        if isinstance(exc, litellm.Timeout):
            raise UpstreamTimeout(f"the provider ({provider}) did not answer in time") from exc
        if isinstance(exc, litellm.APIConnectionError):
            raise UpstreamUnreachable(f"could not reach the provider ({provider})") from exc
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int) or not 400 <= status <= 599:
            status = 502
        message = f"the provider ({provider}) answered {status}"
        said = provider_message(str(exc), api_key)
        if said:
            message += f": {said}"
        body = {"error": {"message": message, "type": _TYPES.get(status, "upstream_error"),
                          "param": None, "code": status}}
        return LitellmReply(status, body=orjson.dumps(body))


_TYPES = MappingProxyType({
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error",
})
_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.){1,300})"')
_UNSAFE = re.compile(r"Traceback|File \"|/site-packages/|\.py\b|[A-Za-z]:\\\\|(?:^|\s)/[\w.-]+/")
_MAX_SAID = 200


def provider_message(text: str, api_key: str | None) -> str | None:
    """The provider's own error message from litellm's exception text (`... - {"error":
    {"message": "..."}}`), short and only when it shows no file path or traceback."""
    found = _MESSAGE.search(text)
    if found is None:
        return None
    try:
        said = orjson.loads(f'"{found.group(1)}"')
    except orjson.JSONDecodeError:
        return None
    if not isinstance(said, str):
        return None
    if api_key:
        said = said.replace(api_key, "[key]")
    said = " ".join(said.split())[:_MAX_SAID]
    if not said or _UNSAFE.search(said):
        return None
    return said
