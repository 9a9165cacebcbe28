"""The base of the cycle config's sections (exporter/cycle_config.py): strict about what is
surely a mistake in a TOML file."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, model_validator


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or annotation is Any or bool in get_args(annotation)


def _number_only(annotation: Any) -> bool:
    """An int or float field (optional or not), which no string should reach."""
    kinds = get_args(annotation) or (annotation,)
    return any(k in (int, float) for k in kinds) and all(k in (int, float, type(None))
                                                         for k in kinds)


class StrictSection(BaseModel):
    """A config section that refuses what is surely a mistake: an unknown key, inf or nan,
    true/false or a quoted string for a number."""

    # inf/nan never make sense here and crash later (a timedelta overflow, a JSON record)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_true_for_a_number(cls, data: Any) -> Any:
        # pydantic reads `min_requests = true` as 1: a typo that would promote on 1 request;
        # and `percent = "50"` as 50: a quoted number is a mistake of the same kind
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and field is not None \
                        and not _takes_bool(field.annotation):
                    raise ValueError(f"{key} = {str(value).lower()}: a number is expected "
                                     "here, not true/false")
                if isinstance(value, str) and field is not None \
                        and _number_only(field.annotation):
                    raise ValueError(f"{key} = {value[:40]!r}: a number is expected here, not "
                                     "a string (write it without quotes)")
        return data
