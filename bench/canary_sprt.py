"""Operating characteristics of the canary's sequential test (exporter/canary_stats.py):
for simulated canaries (the canary gets `--share` of the traffic; each request errs with the
given rate), how often the test rolls back / promotes and after how many canary requests.
The test is looked at after every request (the cycle's watcher looks every few seconds,
which only stops it a little later).

    python bench/canary_sprt.py [--runs 300] [--share 0.1]
"""

from __future__ import annotations

import argparse
import random
import statistics

from exporter.canary_stats import SprtParams, sprt

CASES = ((0.30, 0.0), (0.0, 0.0), (0.01, 0.01), (0.10, 0.10), (0.06, 0.0), (0.0, 0.20))


def trial(canary: float, baseline: float, share: float, params: SprtParams, seed: int,
          cap: int = 5000) -> tuple[str, int]:
    rng = random.Random(seed)
    n = x = nb = xb = 0
    while n < cap:
        if rng.random() < share:
            n, x = n + 1, x + (rng.random() < canary)
        else:
            nb, xb = nb + 1, xb + (rng.random() < baseline)
        decision = sprt("errors", n, x, nb, xb, params).decision
        if decision != "continue":
            return decision, n
    return "continue", n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--share", type=float, default=0.1)
    args = parser.parse_args()
    params = SprtParams(alpha=0.05, beta=0.2, tolerance=0.01, bad=0.05)  # the defaults
    print(f"alpha {params.alpha} beta {params.beta} tolerance +{params.tolerance} "
          f"bad +{params.bad}; canary share {args.share}; {args.runs} runs each")
    for canary, baseline in CASES:
        results = [trial(canary, baseline, args.share, params, seed) for seed in range(args.runs)]
        sizes = [n for _, n in results]
        worse = 100 * sum(d == "worse" for d, _ in results) / args.runs
        fine = 100 * sum(d == "not_worse" for d, _ in results) / args.runs
        print(f"canary errors {canary:.2f} vs current {baseline:.2f}: rolled back {worse:3.0f}%,"
              f" no worse {fine:3.0f}%; canary requests median {statistics.median(sizes):g},"
              f" 95th {sorted(sizes)[int(0.95 * (len(sizes) - 1))]}")


if __name__ == "__main__":
    main()
