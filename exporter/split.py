"""Train/validation split that never leaks.

Examples that are duplicates (exact, or equal after removing whitespace and folding case:
the same `fingerprint`), that ask the same prompt (the same `prompt_fingerprint`: one
prompt answered twice, or edited on one copy) or that share a session are joined into one
group (union-find); a group always lands on one side, so no prompt of validation is trained
on. The groups are also the evaluation's independent units: each validation line's lineage
record names its group (`group`), and the statistics count groups, not lines (copies of one
prompt are one piece of evidence, exporter/eval_groups.py). Groups are ordered by a seeded
hash of their smallest member fingerprint and taken into validation while they fit the
target size, so the split depends only on the seed and on the set of examples, not on their
order.

Stratified by label when examples have one (classification): each label's examples are
split on their own, toward `fraction` of that label's count, so validation keeps the
label proportions. A group belongs to the label that sorts first among its members (a group
with mixed labels is rare: a duplicate or a session with two classes).

:class:`Grouper` takes examples one batch at a time, so an export groups them while they
stream in; :func:`assign_split` is the one-call form.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from exporter.examples import Example, fingerprint, prompt_fingerprint
from tuneloop.errors import DatasetError

TRAIN = 0
VALIDATION = 1


@dataclass(frozen=True, slots=True)
class SplitResult:
    sides: bytearray  # per example: TRAIN or VALIDATION
    groups: int
    duplicates: list[int]  # indexes of examples whose fingerprint repeats an earlier one
    group_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # per example: its group's id (the index of the group's first example)
    same_prompt: list[int] = field(default_factory=list)  # indexes of examples asking an
    # earlier example's prompt with another answer (not a duplicate)

    @property
    def validation_groups(self) -> int:
        """The independent groups in validation."""
        chosen = np.frombuffer(bytes(self.sides), dtype=np.uint8).astype(bool)
        return int(np.unique(self.group_of[chosen]).size) if chosen.any() else 0

    @property
    def validation(self) -> int:
        return sum(self.sides)

    @property
    def train(self) -> int:
        return len(self.sides) - self.validation


def check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(
            f"the validation fraction must be in [0, 1), got {fraction}", param="validation"
        )


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _mix(values: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit mix (splitmix64's finalizer) of each value: the groups' order."""
    key = hashlib.blake2b(str(seed).encode(), digest_size=8).digest()
    x = values.astype(np.uint64) ^ np.uint64(int.from_bytes(key, "little"))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Grouper:
    """Union-find over examples, keyed by fingerprint, prompt fingerprint and session id."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.ids: list[str] = []
        self._fingerprints: array[int] = array("q")
        self._labels: list[str | None] = []
        self.duplicates: list[int] = []
        self.same_prompt: list[int] = []
        self._by_fingerprint: dict[int, int] = {}
        self._by_prompt: dict[int, int] = {}
        self._by_session: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.parent)

    def _union(self, i: int, j: int) -> None:
        a, b = _find(self.parent, i), _find(self.parent, j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def add(
        self, fingerprints: Sequence[int], sessions: Sequence[str | None], ids: Sequence[str],
        labels: Sequence[str | None] | None = None, prompts: Sequence[int] | None = None,
    ) -> None:
        if not len(fingerprints) == len(sessions) == len(ids):
            raise ValueError("fingerprints, sessions and ids must have the same length")
        if prompts is not None and len(prompts) != len(ids):
            raise ValueError("prompts and ids must have the same length")
        if labels is not None and len(labels) != len(ids):
            raise ValueError("labels and ids must have the same length")
        self._labels.extend(labels if labels is not None else [None] * len(ids))
        parent, by_fingerprint, by_session = self.parent, self._by_fingerprint, self._by_session
        start = len(parent)
        parent.extend(range(start, start + len(ids)))
        self.ids.extend(ids)
        self._fingerprints.extend(fingerprints)
        repeats = len(self.duplicates)
        for i, value in enumerate(fingerprints, start):
            j = by_fingerprint.setdefault(value, i)
            if j != i:
                self.duplicates.append(i)
                self._union(i, j)
        by_prompt, duplicate = self._by_prompt, set(self.duplicates[repeats:])
        for i, value in enumerate(prompts or (), start):
            j = by_prompt.setdefault(value, i)
            if j != i:
                if i not in duplicate:
                    self.same_prompt.append(i)
                self._union(i, j)
        for i, session in enumerate(sessions, start):
            if session is not None:
                j = by_session.setdefault(session, i)
                if j != i:
                    self._union(i, j)

    def _strata(self, roots: np.ndarray) -> np.ndarray:
        """Per root, the index of its group's stratum (its first label in sorted order; one
        stratum when no example has a label)."""
        n = len(roots)
        if not any(label is not None for label in self._labels):
            return np.zeros(n, dtype=np.int64)
        names = sorted({label or "" for label in self._labels})
        rank = {name: i for i, name in enumerate(names)}
        codes = np.fromiter((rank[label or ""] for label in self._labels), np.int64, n)
        strata = np.full(n, len(names), dtype=np.int64)
        np.minimum.at(strata, roots, codes)
        return strata

    def assign(self, validation_fraction: float, seed: int = 0) -> SplitResult:
        check_fraction(validation_fraction)
        n = len(self.parent)
        roots = np.fromiter((_find(self.parent, i) for i in range(n)), np.int64, n)
        sizes = np.bincount(roots, minlength=n)
        groups = np.flatnonzero(sizes)
        # A group's label is its smallest fingerprint: fixed by its members, not their order.
        labels = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(labels, roots, np.frombuffer(self._fingerprints, dtype=np.int64))
        order = groups[np.lexsort((labels[groups], _mix(labels[groups], seed)))]
        strata = self._strata(roots)
        targets = [round(validation_fraction * int(c)) for c in np.bincount(strata[roots])] \
            if n else []
        taken = [0] * len(targets)
        chosen = np.zeros(n, dtype=bool)
        for root, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
            stratum = int(strata[root])
            if taken[stratum] + size <= targets[stratum]:
                chosen[root] = True
                taken[stratum] += size
        sides = bytearray(chosen[roots].astype(np.uint8).tobytes())
        return SplitResult(sides, int(groups.size), list(self.duplicates), roots,
                           list(self.same_prompt))


def assign_split(
    fingerprints: Sequence[int],
    sessions: Sequence[str | None],
    ids: Sequence[str],
    validation_fraction: float,
    seed: int = 0,
    prompts: Sequence[int] | None = None,
) -> SplitResult:
    """Sides for examples given by parallel sequences (fingerprint, session id, example id,
    prompt fingerprint)."""
    grouper = Grouper()
    grouper.add(fingerprints, sessions, ids, prompts=prompts)
    return grouper.assign(validation_fraction, seed)


def split_examples(
    examples: Sequence[Example], validation_fraction: float, seed: int = 0
) -> SplitResult:
    return assign_split(
        [fingerprint(e) for e in examples],
        [e.session_id for e in examples],
        [e.interaction_id for e in examples],
        validation_fraction,
        seed,
        [prompt_fingerprint(e) for e in examples],
    )
