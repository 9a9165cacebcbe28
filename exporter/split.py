"""Train/validation split that never leaks.

Examples that are duplicates (exact, or equal after removing whitespace and folding case:
the same `fingerprint`) or that share a session are joined into one group (union-find); a
group always lands on one side. Groups are ordered by a seeded hash of their smallest member
id and taken into validation while they fit the target size, so the split depends only on
the seed and on the set of examples, not on their order.

:class:`Grouper` takes examples one batch at a time, so an export groups them while they
stream in; :func:`assign_split` is the one-call form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.examples import Example, fingerprint
from tuneloop.errors import DatasetError

TRAIN = 0
VALIDATION = 1


@dataclass(frozen=True, slots=True)
class SplitResult:
    sides: bytearray  # per example: TRAIN or VALIDATION
    groups: int
    duplicates: list[int]  # indexes of examples whose fingerprint repeats an earlier one

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


def _rank(seed: int, label: str) -> bytes:
    key = seed.to_bytes(8, "big", signed=True)
    return hashlib.blake2b(label.encode(), digest_size=8, key=key).digest()


class Grouper:
    """Union-find over examples, keyed by fingerprint and session id."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.ids: list[str] = []
        self.duplicates: list[int] = []
        self._by_fingerprint: dict[int, int] = {}
        self._by_session: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.parent)

    def _union(self, i: int, j: int) -> None:
        a, b = _find(self.parent, i), _find(self.parent, j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def add(
        self, fingerprints: Sequence[int], sessions: Sequence[str | None], ids: Sequence[str]
    ) -> None:
        if not len(fingerprints) == len(sessions) == len(ids):
            raise ValueError("fingerprints, sessions and ids must have the same length")
        parent, by_fingerprint, by_session = self.parent, self._by_fingerprint, self._by_session
        start = len(parent)
        parent.extend(range(start, start + len(ids)))
        self.ids.extend(ids)
        for i, value in enumerate(fingerprints, start):
            j = by_fingerprint.setdefault(value, i)
            if j != i:
                self.duplicates.append(i)
                self._union(i, j)
        for i, session in enumerate(sessions, start):
            if session is not None:
                j = by_session.setdefault(session, i)
                if j != i:
                    self._union(i, j)

    def assign(self, validation_fraction: float, seed: int = 0) -> SplitResult:
        check_fraction(validation_fraction)
        parent, ids = self.parent, self.ids
        roots = [_find(parent, i) for i in range(len(parent))]
        label: dict[int, str] = {}
        size: dict[int, int] = {}
        for root, example_id in zip(roots, ids, strict=True):
            current = label.get(root)
            if current is None or example_id < current:
                label[root] = example_id
            size[root] = size.get(root, 0) + 1
        target = round(validation_fraction * len(ids))
        chosen: set[int] = set()
        taken = 0
        if target:
            for root in sorted(label, key=lambda r: (_rank(seed, label[r]), label[r])):
                if taken + size[root] <= target:
                    chosen.add(root)
                    taken += size[root]
                    if taken == target:
                        break
        sides = bytearray(VALIDATION if root in chosen else TRAIN for root in roots)
        return SplitResult(sides, len(label), list(self.duplicates))


def assign_split(
    fingerprints: Sequence[int],
    sessions: Sequence[str | None],
    ids: Sequence[str],
    validation_fraction: float,
    seed: int = 0,
) -> SplitResult:
    """Sides for examples given by parallel sequences (fingerprint, session id, example id)."""
    grouper = Grouper()
    grouper.add(fingerprints, sessions, ids)
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
    )
