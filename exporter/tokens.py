"""Token counts with tiktoken, per-model limits, default epochs and the training-cost estimate.

tiktoken's BPE files come from litellm's bundled copies (`TIKTOKEN_CACHE_DIR` is pointed at
them unless the user set it), so counting needs no network.

Base models (longest prefix wins; `ft:<base>:...` counts as its base). Training prices are
USD per 1M trained tokens from OpenAI's pricing page at the time of writing (litellm's price
map has none); SFT and DPO are billed alike. Limits are the tokens of one training example.

| model prefix           | encoding    | example limit | training $/1M |
| ---------------------- | ----------- | ------------- | ------------- |
| gpt-4.1                | o200k_base  | 65,536        | 25.00         |
| gpt-4.1-mini           | o200k_base  | 65,536        | 5.00          |
| gpt-4.1-nano           | o200k_base  | 65,536        | 1.50          |
| gpt-4o                 | o200k_base  | 65,536        | 25.00         |
| gpt-4o-mini            | o200k_base  | 65,536        | 3.00          |
| gpt-3.5-turbo          | cl100k_base | 16,385        | 8.00          |
| gpt-3.5-turbo-0613     | cl100k_base | 4,096         | 8.00          |
| davinci-002            | cl100k_base | 16,384        | 6.00          |
| babbage-002            | cl100k_base | 16,384        | 0.40          |
| (any other)            | by name     | 16,385        | unknown       |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson

from exporter.examples import content_text
from tuneloop.errors import ConfigError
from tuneloop.tokenizers import (  # noqa: F401  (re-exported: the exporter's token vocabulary)
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_REPLY_PRIMING,
    base_model,
    encoding_for,
    load_encoding,
    point_tiktoken_at_bundled_files,
)

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
DEFAULT_EXAMPLE_LIMIT = 16_385
MIN_TRAINING_EXAMPLES = 10  # OpenAI refuses smaller training files
# The base model an export is checked for when none is named: chat and preference files
# train chat models; prompt/completion files train only davinci-002 and babbage-002 (the
# smaller one for classification, as OpenAI's classification guide suggested).
DEFAULT_BASE_MODELS: Mapping[str, str] = MappingProxyType({
    "chat": "gpt-4o-mini-2024-07-18",
    "preference": "gpt-4o-mini-2024-07-18",
    "legacy": "davinci-002",
    "classification": "babbage-002",
})

# Chat framing (tuneloop.tokenizers) as in OpenAI's data-prep recipe; tools count as their JSON
# text.
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    encoding: str
    example_limit: int
    training_price_per_1m: float | None

    @property
    def legacy(self) -> bool:
        """Base models trained on prompt/completion files, not chat messages."""
        return self.name.startswith(("davinci-002", "babbage-002"))


_MODELS: tuple[tuple[str, str, int, float | None], ...] = (
    ("gpt-4.1-nano", "o200k_base", 65_536, 1.50),
    ("gpt-4.1-mini", "o200k_base", 65_536, 5.00),
    ("gpt-4.1", "o200k_base", 65_536, 25.00),
    ("gpt-4o-mini", "o200k_base", 65_536, 3.00),
    ("gpt-4o", "o200k_base", 65_536, 25.00),
    ("gpt-3.5-turbo-0613", "cl100k_base", 4_096, 8.00),
    ("gpt-3.5-turbo", "cl100k_base", 16_385, 8.00),
    ("davinci-002", "cl100k_base", 16_384, 6.00),
    ("babbage-002", "cl100k_base", 16_384, 0.40),
)


def model_info(model: str) -> ModelInfo:
    name = base_model(model)
    for prefix, encoding, limit, price in _MODELS:
        if name.startswith(prefix):
            return ModelInfo(name, encoding, limit, price)
    return ModelInfo(name, encoding_for(name), DEFAULT_EXAMPLE_LIMIT, None)


def default_base_model(fmt: str) -> str:
    """The model an export of format `fmt` is made for when the user names none."""
    return DEFAULT_BASE_MODELS.get(fmt, DEFAULT_BASE_MODELS["chat"])


def default_epochs(n_train: int) -> int:
    """OpenAI's default `n_epochs` for a training file of `n_train` examples."""
    if n_train <= 0:
        return TARGET_EPOCHS
    if n_train * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train)
    if n_train * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train)
    return TARGET_EPOCHS


def billed_tokens(lengths: Iterable[int] | np.ndarray, limit: int) -> int:
    """Tokens charged per epoch: each example up to the limit (the rest is truncated)."""
    counts = lengths if isinstance(lengths, np.ndarray) else np.fromiter(lengths, np.int64)
    return int(np.minimum(counts.astype(np.int64), limit).sum())


class TokenCounter:
    """Exact tiktoken counts; repeated strings (system prompts, tool lists) are counted once."""

    def __init__(self, encoding: str):
        try:
            self.encoding = load_encoding(encoding)
        except Exception as exc:  # tiktoken raises ValueError or network errors
            raise ConfigError(f"cannot load the {encoding} tokenizer: {exc}") from exc
        self._encode = self.encoding.encode_ordinary
        self._cache: dict[str, int] = {}

    def text(self, text: str) -> int:
        return len(self._encode(text)) if text else 0

    def repeated(self, text: str) -> int:
        """For strings that recur across examples."""
        count = self._cache.get(text)
        if count is None:
            count = self.text(text)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[text] = count
        return count

    def body(self, message: Mapping[str, Any]) -> int:
        """Tokens of what a message says: its text, or its tool calls' names and arguments."""
        content = message.get("content")
        tokens = self.text(content) if type(content) is str else self.text(content_text(content))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                tokens += self.text(str(function.get("name", "")))
                tokens += self.text(str(function.get("arguments", "")))
        return tokens

    def message(self, message: Mapping[str, Any], body: int | None = None) -> int:
        """As the recipe counts a message: framing, then every string value (role, content,
        name plus one, tool call id), tool calls by name and arguments."""
        role = message.get("role")
        total = TOKENS_PER_MESSAGE + (self.repeated(role) if isinstance(role, str) else 0)
        if body is None:
            content = message.get("content")
            if role == "system" and isinstance(content, str):
                body = self.repeated(content)
            else:
                body = self.body(message)
        total += body
        name = message.get("name")
        if isinstance(name, str):
            total += self.text(name) + TOKENS_PER_NAME
        call_id = message.get("tool_call_id")
        if isinstance(call_id, str):
            total += self.text(call_id)
        return total

    def tools(self, tools: Any) -> int:
        if not tools:
            return 0
        return self.repeated(orjson.dumps(tools).decode())

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> tuple[int, int]:
        """(tokens of the example, tokens of what its assistant messages say)."""
        total = TOKENS_REPLY_PRIMING + self.tools(tools)
        assistant = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            if message.get("role") == "assistant":
                body = self.body(message)
                assistant += body
                total += self.message(message, body)
            else:
                total += self.message(message)
        return total, assistant


@lru_cache(maxsize=4)
def token_counter(encoding: str) -> TokenCounter:
    """One counter per encoding per process (pool workers build theirs once)."""
    return TokenCounter(encoding)
