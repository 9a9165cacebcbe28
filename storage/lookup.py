"""SQL conditions that pick a given set of interaction ids quickly.

Ids are UUIDv7 strings and every table keyed by interaction id receives its rows in id order,
so bounding the ids lets DuckDB skip row groups by their min/max statistics; one id becomes a
plain equality, which the primary-key index answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def ids_condition(column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
    if not ids:
        return "FALSE", []
    if len(ids) == 1:
        return f"{column} = ?", [ids[0]]
    return (f"({column} BETWEEN ? AND ? AND {column} IN (SELECT unnest(?::VARCHAR[])))",
            [min(ids), max(ids), list(ids)])


Bounds = tuple[str | None, str | None]


def bounded(column: str, bounds: Bounds | None) -> tuple[str, list[Any]]:
    """`column` within inclusive id bounds (either may be open), as SQL and parameters."""
    clauses, params = [], []
    low, high = bounds or (None, None)
    if low is not None:
        clauses.append(f"{column} >= ?")
        params.append(low)
    if high is not None:
        clauses.append(f"{column} <= ?")
        params.append(high)
    return " AND ".join(clauses) or "TRUE", params
