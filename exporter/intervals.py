"""Confidence intervals and tests for evaluation decisions. Pure functions.

- Bootstrap over examples: `resample_indices` draws the same B resamples (fixed seed) for
  every metric of a run, so the candidate's and the baseline's scores, and their difference,
  are computed on the same resampled example sets (a paired bootstrap). `percentile` gives the
  equal-tailed percentile interval of the resampled values.
- Pairwise wins: `wilson` (score interval of a proportion, good at small n and near 0 or 1)
  and `sign_test` (exact two-sided binomial test of wins against losses, ties excluded).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95


BLOCK_CELLS = 4_000_000  # indices per block: 16 MB, whatever the number of examples


def resample_blocks(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """Blocks of rows of a (resamples × n) matrix of example indices drawn with replacement,
    so that memory stays bounded for large validation sets."""
    if n <= 0 or resamples <= 0:
        return
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK_CELLS // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n), dtype=np.int32)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The whole (resamples × n) matrix of `resample_blocks` (for small n)."""
    blocks = list(resample_blocks(n, resamples, seed))
    return np.concatenate(blocks) if blocks else np.zeros((0, max(n, 0)), dtype=np.int32)


def percentile(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The equal-tailed percentile interval of bootstrap values (NaN values ignored)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) with no trials."""
    if trials <= 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of `wins` against `losses` under p = 1/2 (ties are
    left out by the caller); 1.0 with no decided pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = term = 1  # C(n, 0); each next term from the last (exact integers, no comb calls)
    for k in range(min(wins, losses)):
        term = term * (n - k) // (k + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)  # int / int: exact and correctly rounded at any n
