"""How often the evaluation gate promotes a candidate that is no better (r14g #5).

Both models' scores come from the same distribution (a continuous user scorer: Beta(.5, .5)
per example), so every promotion is a false one; the gate wants the margin's lower bound above
0 with at least 10 discordant examples, and should pass at most 2.5% of the time (the lower
bound of a two-sided 95% interval). Compared in the same run: the percentile bootstrap (2,000
resamples; the gate before) and the t-interval the gate uses now (exporter.intervals
.cluster_t_interval), on the same simulated evaluations.

    PYTHONPATH=$PWD python bench/eval_null_rates.py [runs]
"""

from __future__ import annotations

import sys

import numpy as np

from exporter.eval_resample import mean_resampler
from exporter.intervals import cluster_t_interval, group_weight_blocks, percentile

NOMINAL = 0.025


def false_passes(n: int, runs: int, seed: int) -> tuple[float, float]:
    """(percentile bootstrap, t-interval) share of runs a no-better candidate passes."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n)
    boot = t = 0
    for _ in range(runs):
        candidate, baseline = rng.beta(0.5, 0.5, n), rng.beta(0.5, 0.5, n)
        enough = int(np.sum(candidate != baseline)) >= 10
        weights = np.concatenate(list(group_weight_blocks(groups)))
        resampled = (mean_resampler(candidate.tolist())(weights)["mean"]
                     - mean_resampler(baseline.tolist())(weights)["mean"])
        boot += enough and percentile(resampled, 0.95)[0] > 0
        t += enough and cluster_t_interval(candidate - baseline, groups, 0.95)[0] > 0
    return boot / runs, t / runs


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"no-better candidate promoted, {runs} simulated evaluations each "
          f"(nominal {NOMINAL:.1%})")
    for n in (10, 15, 20, 40):
        boot, t = false_passes(n, runs, seed=n)
        ratio = f"{boot / t:.2f}x" if t else "inf"
        print(f"  n={n:>3}: percentile bootstrap {boot:.2%}   t-interval {t:.2%}   "
              f"(bootstrap / t: {ratio})")


if __name__ == "__main__":
    main()
