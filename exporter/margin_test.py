"""The judge's margin with the decided share's own uncertainty: an exact one-sided test.

The judge's margin is P(win) − P(loss) over the judged groups, (wins − losses) / judged: the
decided share times (2 × P(win | decided) − 1). Taking the share as fixed, as the sign test's
interval does (exporter/judge.py), is exact for "above 0" but optimistic for a `margin` above
0: at a true margin of exactly 0.06 with no losses and 200 groups, a gate at 0.06 passed 3.3%
of the time instead of at most 2.5% (r14g #6; exact, by enumerating the outcomes).

So a gate with a margin above 0 also asks `margin_p_value`, an exact unconditional test of
"the margin is at most m": the chance of a (wins − losses) at least the one seen, taken at its
largest over the share of losses (the nuisance), the groups drawn as a trinomial. The share of
losses is searched only within its exact interval at 1 − NUISANCE_ERROR, which is added to the
p-value (Berger and Boos, 1994): still exact, without the power lost to shares the data rule
out. By the same enumeration it passes that candidate 0.2% of the time, and 0.6-0.8% at
25-200 groups with losses (tests/test_judge_margin.py): conservative, never above 2.5%.
"""

from __future__ import annotations

import numpy as np

from exporter.intervals import clopper_pearson

GRID = 64
"""Shares of losses tried per margin (then refined around the largest p-value)."""
NUISANCE_ERROR = 0.001
"""Berger and Boos (1994): the share of losses is searched only within its exact interval at
1 − this, which is added to the p-value (so the test stays exact, without the power lost to
shares of losses the data rule out)."""
REFINE = 16
"""Golden-section steps around the grid's largest p-value."""


def _tails(n: int, seen: int, margin: float, losses: np.ndarray) -> np.ndarray:
    """P(wins − losses >= seen) over n groups when P(loss) is each of `losses` and P(win) =
    P(loss) + margin. The difference's distribution is the n-th power of the one-group
    polynomial (index k + n for k = −n..n), through the FFT: each term has modulus <= 1, so
    the power stays exact to rounding."""
    size = 2 * n + 1
    one = np.zeros((losses.size, size))
    one[:, 0] = losses
    one[:, 1] = np.clip(1.0 - 2 * losses - margin, 0.0, 1.0)
    one[:, 2] = losses + margin
    pmf = np.clip(np.fft.irfft(np.fft.rfft(one, axis=1) ** n, size, axis=1), 0.0, 1.0)
    return np.minimum(1.0, pmf[:, seen + n:].sum(axis=1))


def _p_value(n: int, seen: int, margin: float, losses: tuple[float, float]) -> float:
    """The largest chance, over the share of losses in `losses` (its confidence set), of a
    difference at least `seen` when the true margin is `margin`; plus that set's error."""
    lowest = max(0.0, -margin, losses[0])  # P(win) = P(loss) + margin >= 0
    highest = min((1.0 - margin) / 2, losses[1])  # P(win) + P(loss) <= 1
    if highest < lowest:  # no share of losses both possible and likely: rejected
        return NUISANCE_ERROR
    grid = np.linspace(lowest, highest, GRID)
    tails = _tails(n, seen, margin, grid)
    best = int(np.argmax(tails))
    low, high = grid[max(0, best - 1)], grid[min(GRID - 1, best + 1)]
    largest = float(tails[best])
    for _ in range(REFINE):  # golden-section search around the grid's best
        inner = np.array([low + (high - low) * 0.382, low + (high - low) * 0.618])
        a, b = _tails(n, seen, margin, inner)
        largest = max(largest, float(a), float(b))
        if a >= b:
            high = inner[1]
        else:
            low = inner[0]
    return NUISANCE_ERROR + largest


def margin_p_value(wins: int, losses: int, ties: int, margin: float) -> float:
    """The exact one-sided p-value of "the margin is at most `margin`" (1 with no judged
    group); the gate passes a margin when it is at most (1 − confidence) / 2."""
    n = wins + losses + ties
    if n == 0:
        return 1.0
    shares = clopper_pearson(losses, n, 1 - NUISANCE_ERROR)
    return min(1.0, _p_value(n, wins - losses, margin, shares))
