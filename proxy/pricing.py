"""Cost in USD from litellm's local price map (read as a file: importing litellm is slow and
would try the network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson

PRICE_FILE = "model_prices_and_context_window_backup.json"


def _locate_price_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_FILE
    return path if path.is_file() else None


class PriceMap:
    def __init__(self, prices: dict[str, tuple[float, float]]):
        self._prices = prices

    @classmethod
    def load(cls, path: Path | None = None) -> PriceMap:
        path = path or _locate_price_file()
        if path is None:
            return cls({})
        raw = orjson.loads(path.read_bytes())
        prices: dict[str, tuple[float, float]] = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict):
                continue
            input_cost = entry.get("input_cost_per_token")
            output_cost = entry.get("output_cost_per_token")
            if isinstance(input_cost, int | float):
                prices[name] = (float(input_cost), float(output_cost or 0.0))
        return cls(prices)

    def lookup(self, model: str | None) -> tuple[float, float] | None:
        if not model:
            return None
        if model in self._prices:
            return self._prices[model]
        if model.startswith("ft:"):
            # ft:gpt-4o-mini-2024-07-18:org:suffix:id is priced as ft:gpt-4o-mini-2024-07-18
            base = model.split(":")[1]
            return self._prices.get("ft:" + base) or self._prices.get(base)
        if "/" in model:
            return self._prices.get(model) or self._prices.get(model.split("/", 1)[1])
        return None

    def cost(self, model: str | None, prompt_tokens: int | None,
             completion_tokens: int | None) -> float | None:
        price = self.lookup(model)
        if price is None or (prompt_tokens is None and completion_tokens is None):
            return None
        return (prompt_tokens or 0) * price[0] + (completion_tokens or 0) * price[1]
