"""Operating characteristics of the canary's verdict (exporter/canary_stats.py, with the
errors and thumbs-down tests each at alpha / 2 as exporter/cycle_canary.py runs them): for
simulated canaries (the canary gets `--share` of the traffic; each request errs with the
given rate; a `--rated` share of requests is rated, thumbs-down with the given rate), how
often the canary is rolled back / found no worse, and after how many canary requests.

The false-rollback rate is measured the hard way: with equal rates in both arms the test is
looked at after every `--every` canary requests and never stopped by a "no worse" decision,
up to `--cap` canary requests, so it is the chance that an even canary is *ever* rolled back.

Then two threats to the error test, old (every request an independent trial, the draw an
unkeyed hash anyone can compute) against new (a sticky user's requests weigh at most
`max_requests_per_user` per target, a hot key is drawn per request, the draw is keyed with a
server secret), side by side:

- clustered users (bench/canary_clusters.py): an even canary, users differing in volume
  (Pareto) and in how often their requests err, each user sticky to one arm;
- a dilution attacker holding an app key, adding cheap successful requests to promote a
  canary failing 20% of its requests against 1%.

    python bench/canary_sprt.py [--runs 400] [--shares 0.1 0.5] [--every 1] [--skip-threats]
"""

from __future__ import annotations

import argparse
import random
import statistics

from bench.canary_clusters import print_threats
from exporter.canary_stats import SprtParams, sprt

ALPHA, BETA = 0.05, 0.2  # the [canary] defaults
ERRORS = SprtParams(ALPHA / 2, BETA, 0.01, 0.05)
THUMBS = SprtParams(ALPHA / 2, BETA, 0.05, 0.2)
EVEN = ((0.0, 0.0), (0.02, 0.02), (0.10, 0.10), (0.03, 0.02))  # the last: + tolerance
# error rates; thumbs-down 0.2 in both arms
BAD = ((0.30, 0.02), (0.30, 0.0), (0.08, 0.02))


def trial(canary: float, baseline: float, share: float, seed: int, *, rated: float,
          down: tuple[float, float], every: int, cap: int, stop_no_worse: bool
          ) -> tuple[str, int]:
    rng = random.Random(seed)
    arms = [[0, 0, 0, 0], [0, 0, 0, 0]]  # canary, baseline: requests, errors, rated, down
    rates = (canary, baseline)
    while arms[0][0] < cap:
        arm = 0 if rng.random() < share else 1
        counts = arms[arm]
        counts[0] += 1
        counts[1] += rng.random() < rates[arm]
        if rng.random() < rated:
            counts[2] += 1
            counts[3] += rng.random() < down[arm]
        if arm or arms[0][0] % every:
            continue
        (n, x, r, d), (nb, xb, rb, db) = arms
        tests = [sprt("errors", n, x, nb, xb, ERRORS)]
        if r >= 10:  # min_feedback
            tests.append(sprt("thumbs_down", r, d, rb, db, THUMBS))
        if any(t.decision == "worse" for t in tests):
            return "worse", n
        if stop_no_worse and all(t.decision == "not_worse" for t in tests):
            return "not_worse", n
    return "continue", arms[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--cap", type=int, default=500)
    parser.add_argument("--skip-threats", action="store_true")
    args = parser.parse_args()
    print(f"alpha {ALPHA} (each test {ALPHA / 2}), beta {BETA}; errors +{ERRORS.tolerance} "
          f"tolerated, +{ERRORS.bad} bad; thumbs-down +{THUMBS.tolerance} / +{THUMBS.bad}; "
          f"30% of requests rated; {args.runs} runs each, a look every {args.every} canary "
          f"requests, up to {args.cap}")
    for share in args.shares:
        for canary, baseline in EVEN:
            results = [trial(canary, baseline, share, seed, rated=0.3, down=(0.2, 0.2),
                             every=args.every, cap=args.cap, stop_no_worse=False)
                       for seed in range(args.runs)]
            worse = sum(d == "worse" for d, _ in results) / args.runs
            print(f"share {share:.1f}, errors {canary:.2f} vs {baseline:.2f}, thumbs-down "
                  f"0.2 vs 0.2: false rollbacks {100 * worse:.1f}% (alpha {100 * ALPHA:g}%)")
        for canary, baseline in BAD:
            results = [trial(canary, baseline, share, seed, rated=0.3, down=(0.2, 0.2),
                             every=args.every, cap=args.cap, stop_no_worse=True)
                       for seed in range(args.runs)]
            sizes = sorted(n for d, n in results if d == "worse")
            worse = len(sizes) / args.runs
            within = sum(n <= 100 for n in sizes) / args.runs
            median = statistics.median(sizes) if sizes else float("nan")
            top = sizes[int(0.95 * (len(sizes) - 1))] if sizes else float("nan")
            print(f"share {share:.1f}, errors {canary:.2f} vs {baseline:.2f}: rolled back "
                  f"{100 * worse:.1f}% ({100 * within:.1f}% within 100 canary requests); "
                  f"canary requests median {median:g}, 95th {top}")
    if not args.skip_threats:
        print_threats(ERRORS, runs=args.runs)


if __name__ == "__main__":
    main()
