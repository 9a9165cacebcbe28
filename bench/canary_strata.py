"""What the canary's strata (exporter/canary_strata.py) cost honest deployments and what they
stop, with and without them on the same simulated traffic (the error test at alpha / 2, the
concurrent baseline, `min_requests` 100 for a promotion, as exporter/cycle_canary.py runs it).

Two app keys at 70/30 before the canary (100 requests, one a second); during it one request a
second, each request's key drawn at the given mix, each key's requests err at its own rate per
arm (each key's allowance is its own usual rate: one a second times its history share, times
the elapsed seconds, times SLACK). Scenarios:

- even: both arms alike (keys erring 0% / 10%), never stopped by "no worse": the chance an
  even canary is ever rolled back (false rollbacks, alpha 2.5% for this test), at the usual mix
  and with the mix shifted to 50/50 during the canary;
- bad: the canary fails 12% of both keys' requests (stable 0%): canary requests to rollback;
- good: both 0%: canary requests to promotion;
- burst: as `bad`, but a third key sends 150 cheap requests (never failing) right after the
  promotion: promoted (the bug) or rolled back; and 200 fresh keys one cheap request each;
- rotation: `good` with key a's requests sent by a key absent from the history (an honest
  key rotation when the canary opens): counted as a new app (r14j HIGH 1), later, not wrong;
- silent: `bad` with key a (70%) silent during the canary, b at its usual rate (0.3 a
  second), and a key absent from the history sending 3 (5) cheap requests per b request from
  the promotion on (r14j HIGH 1: the fresh key inherited a's allowance); without it, the
  baseline;
- one app (r14k HIGH 2): a single-app route (key a the whole history) whose key rotates at the
  open, alone, beside an honest fresh monitor (1 request per 50 app requests), or beside a
  fresh key sending 1 (5) cheap requests per app request; and that key without the rotation;
- one app rotated + 5 fresh keys, app rotated + batch silent (r14l HIGH 1-2): every live key
  fresh (a rotation nobody linked) beside 5 fresh keys sending 1 cheap request each per app
  request, or the app (30%) rotated, the history's batch key (70%) silent, a fresh key sending
  5 per app request (before r14l: the fresh keys took the route's rate, each up to the largest
  history key's allowance);
- history burst (r14k MED 3): the cheap key sent 2.5 (1) times the apps' history in one hour
  of it (or spread over its last 6 or 12 hours), then 5 cheap requests per app request.

The history is hour-shaped (`judged_parts`, 24 parts): the apps (and the hanging keys of
`--hold`) send the same every hour, a burst all in its hours. Run on a tree without
`judged_parts` (main before r14k MED 3) it reads each key's whole count, as it did.

Run this file with PYTHONPATH at another tree (main) for that tree's figures on the same seeds.

`--hold`: the promotion's hold on unjudged rows (`opinions_missing_weighed`, r14e MED 4) with
the whole watch (exporter/cycle_canary.py `judge_canary`, `min_requests` 100), a clean canary
(0% vs 0%) at each share: app requests to promotion when right after the promotion N fresh
keys each send 12 quick requests and hang up so that 5 rows an arm's canary wait on a skipped
background opinion (each key's full weight: at most its judged requests and 5), weighed per key
(as before) -> inside the strata (now); and as guards the honest cases, one app key (the only
key before and during the canary) with 5 such rows, and the 70/30 apps with 5 from key a (and
from b). r14k HIGH 1: the hanging keys each sent 1-20 requests beside a day's 2,400 app
requests before the canary (history keys; use `--cap 2400` or more, a day).

    python bench/canary_strata.py [--runs 200] [--shares 0.9 0.5] [--every 5] [--hold]
                                  [--only rotated silent]
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from exporter.canary_stats import SprtParams, sprt
from exporter.canary_strata import strata_of, stratified
from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig

ERRORS = SprtParams(0.025, 0.2, 0.01, 0.05)
MIN_REQUESTS = 100
HISTORY_S = 100.0
HOURS = 24
"""The history's parts (`judged_parts`, storage/route_health.py): its hours."""


def history_row(flat: dict[str, float], bursts: dict[str, tuple[float, int]] | None = None
                ) -> list[dict[str, Any]]:
    """The history's health rows, hour-shaped: each key in `flat` sends the same in every
    hour, each key in `bursts` (count, hours) all of it in the last `hours` hours."""
    keys: dict[str, dict[str, Any]] = {}
    for key, n in flat.items():
        keys[key] = {"trials": n, "judged_parts": [n / HOURS] * HOURS}
    for key, (n, hours) in (bursts or {}).items():
        keys[key] = {"trials": n,
                     "judged_parts": [0.0] * (HOURS - hours) + [n / hours] * hours}
    return [{"by_key": keys}]


HISTORY = history_row({"a": 70.0, "b": 30.0})


def arm_row(counts: dict[str, list[int]]) -> dict[str, Any]:
    return {"weighed_requests": sum(n for n, _ in counts.values()),
            "weighed_errors": sum(x for _, x in counts.values()),
            "by_key": {k: {"trials": n, "failures": x} for k, (n, x) in counts.items()}}


@dataclass(frozen=True)
class Live:
    """Who sends during the canary: key a renamed (`rotated`), the apps' requests a second
    (`pace`), a fresh key's cheap requests per app request (`cheap_per`) or one every
    `monitor_every` app requests (an honest monitor), each of `cheap_keys` fresh keys as many
    (r14l HIGH 1: 5 keys); `history`: the keys' judged requests
    before the canary, the same every hour (the apps' 70/30 unless given); `burst`: the cheap
    key's (`fresh`) requests sent before the canary in its last `burst_hours` hours."""

    rotated: bool = False
    pace: float = 1.0
    cheap_per: int = 0
    cheap_keys: int = 1
    monitor_every: int = 0
    history: tuple[tuple[str, float], ...] = ()
    burst: float = 0.0
    burst_hours: int = 1

    def before(self) -> list[dict[str, Any]]:
        if not self.history and not self.burst:
            return HISTORY
        flat = dict(self.history or (("a", 70.0), ("b", 30.0)))
        return history_row(flat, {"fresh": (self.burst, self.burst_hours)} if self.burst
                           else None)


ONE_APP = (("a", 100.0),)
"""A single-app route: key a alone before the canary (r14k HIGH 2)."""
BATCH_SILENT = (("a", 30.0), ("batch", 70.0))
"""An app (30%) and a nightly batch (70%, silent during the canary: r14l HIGH 2)."""


def trial(seed: int, share: float, mix: float, rates: dict[str, tuple[float, float]],
          strata: bool, every: int, cap: int, stop_no_worse: bool, burst: int = 0,
          burst_keys: int = 1, live: Live = Live()) -> tuple[str, int]:
    rng = random.Random(seed)
    arms: list[dict[str, list[int]]] = [{}, {}]
    for n in range(burst):  # never fails
        key = f"cheap{n % burst_keys}"
        arms[0 if rng.random() < share else 1].setdefault(key, [0, 0])[0] += 1
    sent = 0
    while sent < cap:
        key = "a" if rng.random() < mix else "b"
        arm = 0 if rng.random() < share else 1
        counts = arms[arm].setdefault("a-rotated" if live.rotated and key == "a" else key,
                                      [0, 0])
        counts[0] += 1
        counts[1] += rng.random() < rates[key][arm]
        monitor = live.monitor_every > 0 and sent % live.monitor_every == 0
        for n in range(live.cheap_keys):
            for _ in range(live.cheap_per + (monitor and n == 0)):  # never fail
                arms[0 if rng.random() < share else 1].setdefault(
                    f"fresh{n}" if n else "fresh", [0, 0])[0] += 1
        sent += 1
        if sent % every:
            continue
        found = strata_of(live.before(), HISTORY_S, sent / live.pace) if strata else None
        canary, stable = stratified(arm_row(arms[0]), arm_row(arms[1]), found)
        test = sprt("errors", canary["weighed_requests"], canary["weighed_errors"],
                    stable["weighed_requests"], stable["weighed_errors"], ERRORS)
        if test.decision == "worse":
            return "rollback", sent
        # what `min_requests` counts (r14m MED 3); a tree without it: the weighed requests
        if stop_no_worse and test.decision == "not_worse" \
                and canary.get("counted_requests", canary["weighed_requests"]) >= MIN_REQUESTS:
            return "promote", sent
    return "continue", sent


HOLD_CFG = CanaryConfig(percent=50, min_requests=MIN_REQUESTS)
QUICK = 12
"""Each hanging key's quick requests (on the canary about 6 at 50%: its full 5 missing rows)."""


def hold_row(counts: dict[str, list[float]], per_key: bool) -> dict[str, Any]:
    """An arm's health row from each key's [trials, failures, missing]; `per_key`: without
    the keys' `missing` (as on main: the server's per-key sum, counted as it came)."""
    keys = {k: {"trials": n, "failures": x, "traffic": n, **({} if per_key else {"missing": m})}
            for k, (n, x, m) in counts.items()}
    missing = sum(m for _, _, m in counts.values())
    return {"weighed_requests": sum(n for n, _, _ in counts.values()),
            "weighed_errors": sum(x for _, x, _ in counts.values()), "votes": 0.0,
            "down_votes": 0.0, "opinions_missing": missing, "opinions_missing_weighed": missing,
            "by_key": keys}


def hold_trial(seed: int, share: float, history: list[dict[str, Any]], mix: dict[str, float],
               hangers: int, honest_missing: str | None, per_key: bool, every: int,
               cap: int) -> tuple[str, int]:
    """A clean canary's verdict and the app requests sent until it (module doc, `--hold`)."""
    rng = random.Random(seed)
    # the apps sent one request a second before the canary too
    apps_s = sum(counts["trials"] for row in history for key, counts in row["by_key"].items()
                 if key in mix)
    arms: list[dict[str, list[float]]] = [{}, {}]
    for n in range(hangers * QUICK):  # never fail
        arm = arms[0 if rng.random() < share else 1]
        arm.setdefault(f"hang{n % hangers}", [0, 0, 0])[0] += 1
    for counts in arms[0].values():  # each key's full weight: its judged requests, 5
        counts[2] = min(5, counts[0])
    sent, keys = 0, list(mix)
    while sent < cap:
        key = rng.choices(keys, [mix[k] for k in keys])[0]
        counts = arms[0 if rng.random() < share else 1].setdefault(key, [0, 0, 0])
        counts[0] += 1
        if honest_missing and key in honest_missing.split("+") and arms[0].get(key):
            arms[0][key][2] = min(5, arms[0][key][0])
        sent += 1
        if sent % every:
            continue
        canary, stable = hold_row(arms[0], per_key), hold_row(arms[1], per_key)
        if len([k for arm in arms for k in arm]) > 1:
            canary, stable = stratified(canary, stable, strata_of(history, apps_s,
                                                                  float(sent)))
        verdict = judge_canary(canary, stable, HOLD_CFG, timedelta(hours=1))
        if verdict.verdict != "continue":
            return verdict.verdict, sent
    return "continue", sent


def hold_main(args: argparse.Namespace) -> None:
    one_key = history_row({"a": 100.0})
    cases = [("one app key, 5 hang-ups", one_key, {"a": 1.0}, 0, "a"),
             ("apps 70/30, 5 hang-ups from a", HISTORY, {"a": 0.7, "b": 0.3}, 0, "a"),
             ("apps 70/30, no hang-ups", HISTORY, {"a": 0.7, "b": 0.3}, 0, None),
             ("apps 70/30 + 1 hanging key", HISTORY, {"a": 0.7, "b": 0.3}, 1, None),
             ("apps 70/30 + 6 hanging keys", HISTORY, {"a": 0.7, "b": 0.3}, 6, None),
             ("apps 70/30 + 20 hanging keys", HISTORY, {"a": 0.7, "b": 0.3}, 20, None),
             ("apps 70/30, 5 hang-ups from a and from b", HISTORY, {"a": 0.7, "b": 0.3}, 0,
              "a+b")]
    # r14k HIGH 1: the hanging keys each sent a trickle before the canary (h beside a day's
    # 2,400 app requests), so each is a history key; run with --cap 2400 (max_hours: a day)
    for keys, per_key in ((6, 3), (20, 1), (20, 5), (20, 20), (50, 5)):
        history = history_row({"a": 1680.0, "b": 720.0,
                               **{f"hang{n}": float(per_key) for n in range(keys)}})
        cases.append((f"apps 70/30 + {keys} hanging keys, {per_key} history requests each",
                      history, {"a": 0.7, "b": 0.3}, keys, None))
    print(f"clean canary, {args.runs} runs each, a look every {args.every} app requests, up "
          f"to {args.cap}; missing rows weighed per key (before) -> in the strata (now)")
    for share in args.shares:
        for name, history, mix, hangers, honest in cases:
            line = []
            for per_key in (True, False):
                results = [hold_trial(seed, share, history, mix, hangers, honest, per_key,
                                      args.every, args.cap) for seed in range(args.runs)]
                line.append(summary(results, args.runs))
            print(f"share {share:.1f}, {name}: {line[0]} -> {line[1]}")


def summary(results: list[tuple[str, int]], runs: int) -> str:
    parts = []
    for verdict in ("rollback", "promote"):
        sizes = sorted(n for d, n in results if d == verdict)
        if sizes or verdict == "rollback":
            median = f" (app requests median {statistics.median(sizes):g})" if sizes else ""
            parts.append(f"{verdict} {100 * len(sizes) / runs:.1f}%{median}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.9, 0.5])
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--cap", type=int, default=1000)
    parser.add_argument("--only", nargs="+", default=[],
                        help="only the scenarios whose name has one of these words")
    parser.add_argument("--hold", action="store_true",
                        help="the promotion's hold on unjudged rows (module doc)")
    args = parser.parse_args()
    if args.hold:
        hold_main(args)
        return
    print(f"keys a/b at 70/30 before the canary; {args.runs} runs each, a look every "
          f"{args.every} requests, up to {args.cap}; without strata -> with strata")
    even = {"a": (0.0, 0.0), "b": (0.10, 0.10)}
    bad = {"a": (0.12, 0.0), "b": (0.12, 0.0)}
    good = {"a": (0.0, 0.0), "b": (0.0, 0.0)}
    b_alone = Live(pace=0.3)
    scenarios = [("even, mix 70/30", 0.7, even, False, 0, 1, Live()),
                 ("even, mix 50/50", 0.5, even, False, 0, 1, Live()),
                 ("bad 12% vs 0%", 0.7, bad, True, 0, 1, Live()),
                 ("good 0% vs 0%", 0.7, good, True, 0, 1, Live()),
                 ("bad + cheap burst 150", 0.7, bad, True, 150, 1, Live()),
                 ("bad + 200 fresh keys' burst", 0.7, bad, True, 200, 200, Live()),
                 ("good, key a rotated", 0.7, good, True, 0, 1, Live(rotated=True)),
                 ("bad, key a silent", 0.0, bad, True, 0, 1, b_alone),
                 ("bad, key a silent + fresh key x3", 0.0, bad, True, 0, 1,
                  Live(pace=0.3, cheap_per=3)),
                 ("bad, key a silent + fresh key x5", 0.0, bad, True, 0, 1,
                  Live(pace=0.3, cheap_per=5)),
                 # r14k HIGH 2: a single-app route whose key rotates at the open, beside one
                 # more fresh key (an honest monitor, or a key's cheap requests)
                 ("bad, one app rotated", 1.0, bad, True, 0, 1,
                  Live(rotated=True, history=ONE_APP)),
                 ("bad, one app rotated + monitor 1/50", 1.0, bad, True, 0, 1,
                  Live(rotated=True, monitor_every=50, history=ONE_APP)),
                 ("good, one app rotated + monitor 1/50", 1.0, good, True, 0, 1,
                  Live(rotated=True, monitor_every=50, history=ONE_APP)),
                 ("bad, one app rotated + fresh key x1", 1.0, bad, True, 0, 1,
                  Live(rotated=True, cheap_per=1, history=ONE_APP)),
                 ("bad, one app rotated + fresh key x5", 1.0, bad, True, 0, 1,
                  Live(rotated=True, cheap_per=5, history=ONE_APP)),
                 ("bad, one app + fresh key x5 (not rotated)", 1.0, bad, True, 0, 1,
                  Live(cheap_per=5, history=ONE_APP)),
                 # r14l HIGH 1-2: every live key fresh (the app rotated without a link) beside
                 # 5 fresh keys sending 1 cheap request each per app request; a rotated app
                 # (30%) whose history's batch key (70%) is silent, beside one key sending 5
                 ("bad, one app rotated + 5 fresh keys x1", 1.0, bad, True, 0, 1,
                  Live(rotated=True, cheap_per=1, cheap_keys=5, history=ONE_APP)),
                 ("bad, app rotated, batch silent + fresh key x5", 1.0, bad, True, 0, 1,
                  Live(rotated=True, pace=0.3, cheap_per=5, history=BATCH_SILENT)),
                 # r14k MED 3: the cheap key's burst of 2.5 (1) x the apps' requests in one
                 # hour of the history (or spread over 6 or 12), then 5 cheap requests per
                 # app request
                 ("bad, history burst 2.5x + its key x5", 0.7, bad, True, 0, 1,
                  Live(cheap_per=5, burst=250.0)),
                 ("bad, history burst 1x + its key x5", 0.7, bad, True, 0, 1,
                  Live(cheap_per=5, burst=100.0)),
                 ("bad, history burst 2.5x over 6 h + its key x5", 0.7, bad, True, 0, 1,
                  Live(cheap_per=5, burst=250.0, burst_hours=6)),
                 ("bad, history burst 2.5x over 12 h + its key x5", 0.7, bad, True, 0, 1,
                  Live(cheap_per=5, burst=250.0, burst_hours=12))]
    for share in args.shares:
        for name, mix, rates, stop, burst, burst_keys, live in scenarios:
            if args.only and not any(word in name for word in args.only):
                continue
            line = []
            for strata in (False, True):
                results = [trial(seed, share, mix, rates, strata, args.every, args.cap, stop,
                                 burst, burst_keys, live) for seed in range(args.runs)]
                line.append(summary(results, args.runs))
            print(f"share {share:.1f}, {name}: {line[0]} -> {line[1]}")


if __name__ == "__main__":
    main()
