"""The independent units of an evaluation: the split's groups (exporter/split.py).

Copies of one prompt, one prompt answered twice and the turns of one session land in one
group at export. They are not independent evidence: a FAQ asked six times is one question,
and a candidate that wins it wins all six copies. So every test and minimum of the gate
counts groups: each group's outcome is the mean of its examples' (a judge's wins minus
losses; a scorer's candidate-minus-baseline differences), the sign test, McNemar and the
bootstrap run over groups, and `min_decided` / `min_discordant` count groups (r14g #1).

A validation line's group comes from its lineage record (`group`); an export written before
lineage had groups falls back to the prompt's fingerprint (exact copies and one prompt
answered twice still count once; sessions cannot be recovered). Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from exporter.examples import prompt_fingerprint_of


def lineage_group(record: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str:
    """A validation line's group key: its lineage record's group, else its prompt's."""
    group = record.get("group")
    if isinstance(group, int) and not isinstance(group, bool):
        return f"g{group}"
    return f"p{prompt_fingerprint_of(messages)}"


def dense_groups(keys: Sequence[str | None]) -> np.ndarray:
    """Each example's group numbered 0..G-1 in order of first appearance; an example with no
    key is a group of its own."""
    seen: dict[str, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    fresh = 0
    for i, key in enumerate(keys):
        if key is None:
            out[i] = fresh
            fresh += 1
            continue
        number = seen.get(key)
        if number is None:
            number = seen[key] = fresh
            fresh += 1
        out[i] = number
    return out


def renumber(group_of: np.ndarray) -> np.ndarray:
    """Groups renumbered 0..G-1 (after some examples were left out)."""
    if group_of.size == 0:
        return group_of.astype(np.int64)
    return np.unique(group_of, return_inverse=True)[1].astype(np.int64).reshape(-1)


def group_means(values: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Per group (0..G-1), the mean of its examples' values."""
    if values.size == 0:
        return np.zeros(0)
    sums = np.bincount(group_of, weights=values)
    sizes = np.bincount(group_of, minlength=sums.size)
    return np.divide(sums, sizes, out=np.zeros(sums.size), where=sizes > 0)


def group_signs(values: np.ndarray, group_of: np.ndarray) -> tuple[int, int, int]:
    """(groups whose mean is above 0, below 0, groups) for per-example values."""
    means = group_means(values, group_of)
    return int((means > 0).sum()), int((means < 0).sum()), int(means.size)


def units_text(pairwise: Mapping[str, Any], kind: str) -> str:
    """`N judged pairs`, or with groups of several pairs `G judged groups (N pairs)`."""
    pairs = pairwise.get(kind, pairwise["decided"])
    groups = (pairwise.get("groups") or {}).get(kind)
    if groups is None or (groups == pairs and pairwise["groups"]["total"] == pairwise["pairs"]):
        return f"{pairs} {kind} pairs"
    return f"{groups} {kind} groups ({pairs} pairs: copies of one prompt or a session count once)"


def discordant_groups_text(paired: Mapping[str, Any]) -> str:
    groups = paired.get("discordant_groups")
    if groups is None or paired.get("groups") == paired["compared"]:
        return ""
    return (f"; in independent groups {groups} discordant (candidate better on "
            f"{paired['groups_better']}, baseline on {paired['groups_worse']})")
