"""What a client may send to a provider: the request parameters OpenAI's API defines, per endpoint.

Whatever an app sends is hostile. For a route to a provider reached through litellm, the request
body becomes keyword arguments of `litellm.acompletion`, and litellm reads many keywords that are
no part of OpenAI's API: `api_base`/`base_url` (where to send the provider key), `api_key`,
`custom_llm_provider` (which key to send), `extra_headers`, `aws_*`, `vertex_*`, `mock_response`,
callbacks... So only the parameters below go on; any other key is refused with a 400 naming it,
as OpenAI itself answers ("Unrecognized request argument supplied"), so an app developer sees the
mistake instead of a silently different request.

The lists follow OpenAI's API reference as the official `openai` Python SDK (3.57) types it
(`openai.types.chat.CompletionCreateParams` and friends); tests/security/test_provider_params.py
checks that every parameter the SDK can send is on the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from tuneloop.errors import BadRequest

CHAT_COMPLETIONS = frozenset({
    "model", "messages", "audio", "frequency_penalty", "function_call", "functions",
    "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities",
    "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
})

COMPLETIONS = frozenset({
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
    "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix",
    "temperature", "top_p", "user",
})

EMBEDDINGS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})

ALLOWED: Mapping[str, frozenset[str]] = MappingProxyType({
    "chat.completions": CHAT_COMPLETIONS,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
})

# Parameters OpenAI defines that a litellm provider must not receive as keywords: litellm reads
# `metadata` for its own logging callbacks, so the app's metadata stays in our log only.
NOT_FOR_LITELLM = frozenset({"metadata"})

# Inside `stream_options` OpenAI defines these; litellm forwards the object to providers.
STREAM_OPTIONS = frozenset({"include_usage", "include_obfuscation"})


def unknown_parameters(endpoint: str, payload: Mapping[str, Any]) -> list[str]:
    """The top-level keys of `payload` that OpenAI's API does not define for `endpoint`."""
    allowed = ALLOWED.get(endpoint)
    if allowed is None:
        raise BadRequest(f"no parameter list for endpoint {endpoint!r}",
                         code="unsupported_endpoint")
    return sorted(key for key in payload if key not in allowed)


def check_parameters(endpoint: str, payload: Mapping[str, Any]) -> None:
    """Refuse a body with a key OpenAI's API does not define for the endpoint (400 naming it)."""
    unknown = unknown_parameters(endpoint, payload)
    if unknown:
        names = ", ".join(_shown(key) for key in unknown[:5])
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise BadRequest(
            f"Unrecognized request argument supplied: {names}{more}. Only the parameters of "
            f"OpenAI's API for {endpoint} are accepted on a route to another provider",
            code="unknown_parameter", param=unknown[0][:64],
        )
    options = payload.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("stream_options must be an object", param="stream_options")
        extra = sorted(key for key in options if key not in STREAM_OPTIONS)
        if extra:
            raise BadRequest(
                f"Unrecognized request argument supplied: stream_options.{_shown(extra[0])}",
                code="unknown_parameter", param=f"stream_options.{extra[0][:64]}",
            )


def litellm_params(endpoint: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for litellm from a client's body: checked against OpenAI's list,
    without `model` (the route's target names it) and without what litellm reads for itself."""
    check_parameters(endpoint, payload)
    return {key: value for key, value in payload.items()
            if key != "model" and key not in NOT_FOR_LITELLM}


def _shown(key: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in key[:64])
    return text if len(key) <= 64 else text + "..."
