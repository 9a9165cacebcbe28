"""Confidence intervals and tests for evaluation decisions. Pure functions.

- Bootstrap over the split's groups (copies of one prompt and turns of one session are not
  independent evidence): `group_weight_blocks` draws the same B resamples (fixed seed) for
  every metric of a run, so the candidate's and the baseline's scores, and their difference,
  are computed on the same resampled example sets (a paired cluster bootstrap). `percentile`
  gives the equal-tailed percentile interval of the resampled values.
- `cluster_t_interval`: the t-interval of a mean difference over G groups (cluster-robust
  standard error, G - 1 degrees of freedom): the margin of a mean score. A percentile
  bootstrap of a mean is too narrow at small n (a continuous score no better than the
  baseline passed 5.4% of the time at n = 10, r14g #5; bench/eval_null_rates.py).
- Pairwise wins: `clopper_pearson` (the exact binomial interval of a proportion: never
  narrower than its confidence promises, even at small n), `sign_test` (exact two-sided
  binomial test of wins against losses, ties excluded) and `wilson` (score interval, kept for
  the figures of bench/eval_intervals.py: it is narrower, and anti-conservative at small n).
- `bonferroni`: the confidence of each of K intervals so that all K hold together (the best
  of K checkpoints chosen on the same examples would otherwise look better than it is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import lru_cache
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


def index_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """A (resamples × n) index matrix as weights: how many times each example was drawn."""
    rows = indices.shape[0]
    flat = (np.arange(rows, dtype=np.int64)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.int32)


def group_weight_blocks(group_of: np.ndarray, resamples: int = RESAMPLES,
                        seed: int = SEED) -> Iterator[np.ndarray]:
    """A cluster bootstrap: blocks of (resamples × n) weights, each resample drawing the
    groups (`group_of`: each example's group, numbered 0..G-1) with replacement and every
    example of a drawn group with it. With one example per group it draws exactly what
    `resample_blocks` draws."""
    n = int(group_of.size)
    count = int(group_of.max()) + 1 if n else 0
    for block in resample_blocks(count, resamples, seed):
        yield index_weights(block, count)[:, group_of]


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


@lru_cache(maxsize=256)
def student_t_quantile(probability: float, df: float) -> float:
    """The `probability` quantile (above 1/2) of Student's t with `df` degrees of freedom."""
    def above(t: float) -> float:  # P(T > t), t >= 0
        return 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))

    tail, low, high = 1 - probability, 0.0, 1.0
    while above(high) > tail:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if above(mid) > tail else (low, mid)
    return (low + high) / 2


def cluster_t_interval(differences: np.ndarray, group_of: np.ndarray,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The interval of the mean of paired `differences` (candidate - baseline per example)
    when examples come in groups (`group_of`: 0..G-1) that are not independent: the mean
    ± t(G - 1) × the cluster-robust standard error, whose units are the G groups. With one
    example per group it is the paired t-interval. NaN with fewer than two groups."""
    _z(confidence)
    if differences.size == 0:
        return (math.nan, math.nan)
    _, dense = np.unique(group_of, return_inverse=True)
    groups = int(dense.max()) + 1
    if groups < 2:
        return (math.nan, math.nan)
    n = differences.size
    mean = float(differences.mean())
    sums = np.bincount(dense, weights=differences, minlength=groups)
    sizes = np.bincount(dense, minlength=groups)
    residual = sums - mean * sizes
    se = math.sqrt(groups / (groups - 1) * float(np.sum(residual * residual))) / n
    half = student_t_quantile(1 - (1 - confidence) / 2, groups - 1) * se
    return (mean - half, mean + half)


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


def bonferroni(confidence: float, comparisons: int) -> float:
    """Each interval's confidence when `comparisons` are made together: 1 - (1 - c) / K."""
    if comparisons < 1:
        raise ValueError(f"comparisons must be at least 1, got {comparisons}")
    return 1 - (1 - confidence) / comparisons


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly term by term in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    total = math.fsum(math.exp(base - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                               + i * log_p + (n - i) * log_q) for i in range(k + 1))
    return min(1.0, total)


def _solve(f: Callable[[float], float], target: float) -> float:
    """The p in (0, 1) where the decreasing function f(p) equals target (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        if f(mid) > target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(successes: int, trials: int,
                    confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) equal-tailed interval of a binomial proportion; (0, 1) with
    no trials. Its lower bound is above 1/2 exactly when the one-sided exact binomial test
    rejects p <= 1/2 at level (1 - confidence) / 2."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes ({successes}) must be between 0 and trials ({trials})")
    _z(confidence)  # the same check of the confidence as every interval's
    tail = (1 - confidence) / 2
    if trials == 0:
        return (0.0, 1.0)
    # lower: P(X >= successes | p) = tail; upper: P(X <= successes | p) = tail
    low = 0.0 if successes == 0 else _solve(
        lambda p: binomial_cdf(successes - 1, trials, p), 1 - tail)
    high = 1.0 if successes == trials else _solve(
        lambda p: binomial_cdf(successes, trials, p), tail)
    return (low, high)

