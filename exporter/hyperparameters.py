"""The fine-tuning hyperparameters every provider takes (`--epochs`, `--batch-size`,
`--lr-multiplier`, `--beta`; the cycle's `[finetune] hyperparameters`), checked before a job is
created: the providers' own checks differ (Together and Fireworks took `n_epochs = 0` and a
negative batch size, and created the job). `"auto"` (OpenAI's word for its default) passes.
Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

WHOLE = {"n_epochs": "--epochs", "batch_size": "--batch-size"}  # whole numbers >= 1
POSITIVE = {"learning_rate_multiplier": "--lr-multiplier", "learning_rate": None,
            "beta": "--beta"}  # numbers > 0


def hyperparameter_problem(name: str, value: Any) -> str | None:
    """Why `value` is not a valid `name`, or None (unknown names are the provider's)."""
    flag = WHOLE.get(name) or POSITIVE.get(name)
    called = f"{name} ({flag})" if flag else name
    if value == "auto" or (name not in WHOLE and name not in POSITIVE):
        return None
    if name in WHOLE:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{called} must be a whole number of at least 1 (or \"auto\"), got {value!r}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        return f"{called} must be a number above 0 (or \"auto\"), got {value!r}"
    return None


def hyperparameters_problem(hyperparameters: Mapping[str, Any]) -> str | None:
    for name, value in hyperparameters.items():
        problem = hyperparameter_problem(name, value)
        if problem is not None:
            return problem
    return None
