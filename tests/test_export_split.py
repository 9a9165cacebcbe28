"""The split never leaks and is deterministic (property tests with hypothesis)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.examples import Example, normalize_text
from exporter.split import TRAIN, VALIDATION, assign_split, check_fraction, split_examples
from tuneloop.errors import DatasetError

TEXTS = ["Where is my order?", "Refund please", "Hi", "Cancel it", "Thanks!", "Is it late?"]


def _example(i: int, text: str, shout: bool, answer: str, session: str | None) -> Example:
    if shout:
        text = text.upper().replace(" ", "  \n ")
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return Example(f"ix-{i:03d}", messages, session_id=session)


# Examples that often repeat a text (with whitespace and case changed) or a session.
rows = st.tuples(
    st.sampled_from(TEXTS),
    st.booleans(),
    st.sampled_from(["Yes.", "No.", "Soon."]),
    st.one_of(st.none(), st.sampled_from(["s1", "s2", "s3", "s4", "s5"])),
)
datasets = st.lists(rows, max_size=60).map(
    lambda drawn: [_example(i, *row) for i, row in enumerate(drawn)]
)


def key(example: Example) -> bytes:
    return b"|".join(normalize_text(str(m["content"])) for m in example.messages)


fractions = st.floats(0.0, 0.9, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(datasets, fractions, st.integers(-(2**63), 2**63 - 1))
def test_never_leaks(examples: list[Example], fraction: float, seed: int) -> None:
    sides = split_examples(examples, fraction, seed).sides
    assert len(sides) == len(examples) and set(sides) <= {TRAIN, VALIDATION}
    seen: dict[object, set[int]] = defaultdict(set)
    for example, side in zip(examples, sides, strict=True):
        seen[("text", key(example))].add(side)
        if example.session_id is not None:
            seen[("session", example.session_id)].add(side)
    assert all(len(s) == 1 for s in seen.values()), seen


@settings(max_examples=100, deadline=None)
@given(datasets, fractions, st.integers(0, 2**32), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_order(
    examples: list[Example], fraction: float, seed: int, rng: st.SearchStrategy
) -> None:
    first = split_examples(examples, fraction, seed)
    assert split_examples(list(examples), fraction, seed).sides == first.sides
    shuffled = list(examples)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    again = split_examples(shuffled, fraction, seed)
    side_of = {e.interaction_id: s for e, s in zip(examples, first.sides, strict=True)}
    assert all(side_of[e.interaction_id] == s for e, s in zip(shuffled, again.sides, strict=True))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 400), fractions, st.integers(0, 1000))
def test_distinct_examples_get_the_requested_fraction(n: int, fraction: float, seed: int) -> None:
    ids = [f"ix-{i}" for i in range(n)]
    result = assign_split(list(range(n)), [None] * n, ids, fraction, seed)
    assert result.validation == round(fraction * n) and result.groups == n


def test_seeds_change_the_split_and_duplicates_are_reported() -> None:
    ids = [f"ix-{i}" for i in range(100)]
    a = assign_split(list(range(100)), [None] * 100, ids, 0.2, seed=1)
    b = assign_split(list(range(100)), [None] * 100, ids, 0.2, seed=2)
    assert a.sides != b.sides and a.validation == b.validation == 20
    dup = assign_split([7, 8, 7, 7], [None, "s", "s", None], ["a", "b", "c", "d"], 0.5)
    assert dup.duplicates == [2, 3] and dup.groups == 1 and dup.validation == 0


def test_fraction_is_checked() -> None:
    check_fraction(0.0)
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(DatasetError):
            check_fraction(bad)
