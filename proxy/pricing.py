"""Cost in USD from litellm's local price map (read as a file: importing litellm is slow and
would try the network), with the settings' own price table first (`[prices."model"]`: models
litellm doesn't know, or a negotiated price).

A fine-tuned model `ft:BASE:org:suffix:id` is priced as a fine-tune of BASE: the map's
`ft:BASE` entry, else its dated snapshots' (`ft:gpt-4o-mini` is `ft:gpt-4o-mini-2024-07-18`)
when they agree. Never as BASE itself: fine-tuned tokens cost more. A model with no price is
None ("no price"), never 0.

Prompt tokens the provider read from its prompt cache (`usage.prompt_tokens_details.
cached_tokens`) cost the cached rate: the settings' `cached_input_per_1m`, else litellm's
`cache_read_input_token_cost`; a model with no known cached rate is charged its input rate for
them (what it costs at most).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from tuneloop.config import ModelPrice

PRICE_FILE = "model_prices_and_context_window_backup.json"
_SNAPSHOT = re.compile(r"\d{4}(-\d{2}-\d{2})?")
PER_1M = 1_000_000


def _locate_price_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_FILE
    return path if path.is_file() else None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token, and where it came from (`settings:NAME` or `litellm:NAME`)."""

    input: float
    output: float
    source: str
    cached_input: float | None = None
    """Per prompt token read from the provider's cache; None: unknown (the input rate)."""

    def cost(self, prompt_tokens: int | float, completion_tokens: int | float,
             cached_tokens: int | float = 0) -> float:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt_tokens - cached) * self.input + cached * cached_rate
                + completion_tokens * self.output)

    def to_json(self) -> dict[str, float | str]:
        found: dict[str, float | str] = {"input_per_1m": round(self.input * PER_1M, 6),
                                         "output_per_1m": round(self.output * PER_1M, 6)}
        if self.cached_input is not None:
            found["cached_input_per_1m"] = round(self.cached_input * PER_1M, 6)
        return found | {"source": self.source}


class PriceMap:
    def __init__(self, prices: Mapping[str, tuple[float, ...]],  # (input, output[, cached])
                 overrides: Mapping[str, ModelPrice] | None = None):
        self._prices = dict(prices)
        self._overrides = dict(overrides or {})

    @classmethod
    def load(cls, path: Path | None = None,
             overrides: Mapping[str, ModelPrice] | None = None) -> PriceMap:
        path = path or _locate_price_file()
        if path is None:
            return cls({}, overrides)
        raw = orjson.loads(path.read_bytes())
        prices: dict[str, tuple[float, ...]] = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict):
                continue
            input_cost = entry.get("input_cost_per_token")
            output_cost = entry.get("output_cost_per_token")
            cached_cost = entry.get("cache_read_input_token_cost")
            if isinstance(input_cost, int | float):
                prices[name] = (float(input_cost), float(output_cost or 0.0)) + (
                    (float(cached_cost),) if isinstance(cached_cost, int | float) else ())
        return cls(prices, overrides)

    def _override(self, name: str) -> Price | None:
        given = self._overrides.get(name)
        if given is None:
            return None
        cached = given.cached_input_per_1m
        return Price(given.input_per_1m / PER_1M, given.output_per_1m / PER_1M,
                     f"settings:{name}", None if cached is None else cached / PER_1M)

    def _litellm(self, name: str) -> Price | None:
        found = self._prices.get(name)
        if found is None:
            return None
        return Price(found[0], found[1], f"litellm:{name}",
                     found[2] if len(found) > 2 else None)

    def _fine_tune(self, model: str) -> Price | None:
        parts = model.split(":")
        base = parts[1] if len(parts) > 1 else ""
        if not base:
            return None
        key = f"ft:{base}"
        direct = self._override(model) or self._override(key) or self._litellm(key)
        if direct is not None:
            return direct
        snapshots = sorted(name for name in self._prices if name.startswith(key + "-")
                           and _SNAPSHOT.fullmatch(name[len(key) + 1:]))
        if snapshots and len({self._prices[name] for name in snapshots}) == 1:
            return self._litellm(snapshots[-1])
        return None  # unknown, or snapshots priced differently: no guess

    def lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model.startswith("ft:"):
            return self._fine_tune(model)
        found = self._override(model) or self._litellm(model)
        if found is None and "/" in model:
            return self.lookup(model.split("/", 1)[1])
        return found

    def training_price(self, base_model: str | None) -> float | None:
        """USD per trained token of a fine-tune of `base_model`, from the settings' table
        (litellm's map has no training prices)."""
        given = self._overrides.get(base_model or "")
        if given is None or given.training_per_1m is None:
            return None
        return given.training_per_1m / PER_1M

    def cost(self, model: str | None, prompt_tokens: int | None,
             completion_tokens: int | None, cached_tokens: int | None = None) -> float | None:
        price = self.lookup(model)
        if price is None or (prompt_tokens is None and completion_tokens is None):
            return None
        return price.cost(prompt_tokens or 0, completion_tokens or 0, cached_tokens or 0)
