"""The promotion's hold on unjudged rows inside the canary's strata: every client key's missing
rows as ONE pool (issue 14, r14e MED 4, r14k HIGH 1).

The rows a promotion must survive counting as the canary's errors (`opinions_missing_weighed`:
hang-ups and failures whose background second opinion was skipped or has not reported, each
key's at most its judged requests and `max_requests_per_user`, storage/route_health.py) were
first weighed per key (r14e MED 4: six keys mixing quick successes into their hang-ups added 5
each), then each key's inside its own allowance: a history key's missing rows counted as more
of its requests, at most in proportion to its allowance over its trials and missing rows; the
keys absent from the history as ONE key. But a key's allowance grows with the canary's age, so
after a few hours a key with 1-5 judged requests in the history counted its full 5 again, and
20 such keys (a trickle of 100 one-token requests a day, 2.5% of a 100 requests/h route) held
a clean canary until `max_hours` in every run (r14k HIGH 1), twice with the re-open.

So the keys' missing rows now make one pool, each key's (`part`) weighed in its stratum as
before, pooled so:

- the largest part counts in full: one key's full 5 (a single app, a key whose hang-ups hide
  a bad canary's failures) holds exactly as before;
- every other key's counts at most at the missing rate of the key with the most weighed
  traffic (the route's main app: its part over its weighed trials), times its own weighed
  trials. Honest keys hang up about as often as the main app does, so an honest route's
  missing rows keep about their count; keys whose canary traffic is mostly hang-ups count
  only as much as the app's own rate allows them, whatever their number or their history.

A key must carry the route's largest weighed traffic to set that rate, and a key's weight is
its usual rate before the canary (a burst before it buys that: r14k MED 3, a stated limit).
Nothing counts more than before (each part is at most main's), so this only eases promotions:
what it gives up is a bad canary whose failures are all unjudged (the budget full) on many
small keys while the main app sees none of them; that canary was promoted before too once
each key's 5 were survived (the cap per key), and a rollback never counted those rows.
"""

from __future__ import annotations

from typing import Any


def parts(row: dict[str, Any], allowed: dict[str, float], pool: float,
          trials: dict[str, float], weight: dict[str, float]
          ) -> list[tuple[float, float]] | None:
    """Each stratum's (weighed missing rows, weighed trials over both arms): a history key's
    missing rows as more of its requests, at most in proportion to its allowance over its
    trials and missing rows; the keys absent from the history as ONE key (the most any one
    of them has, in their shared allowance `pool`). None: a row without per-key `missing`
    (an older server)."""
    keys = row.get("by_key") or {}
    if not keys or any("missing" not in counts for counts in keys.values()):
        return None
    found: list[tuple[float, float]] = []
    fresh_missing, fresh_weighed, fresh_trials = 0.0, 0.0, 0.0
    for key, n in trials.items():
        if key not in allowed:
            fresh_weighed += n * weight.get(key, 1.0)
            fresh_trials += n
    for key in dict.fromkeys([*trials, *keys]):
        missing = float(keys.get(key, {}).get("missing", 0))
        if key in allowed:
            n = trials.get(key, 0.0)
            found.append((missing * min(1.0, allowed[key] / (n + missing)) if missing > 0
                          else 0.0, n * weight.get(key, 1.0)))
        else:
            fresh_missing = max(fresh_missing, missing)
    if fresh_missing > 0:
        found.append((fresh_missing * min(1.0, pool / (fresh_trials + fresh_missing)),
                      fresh_weighed))
    elif fresh_weighed > 0:
        found.append((0.0, fresh_weighed))
    return found


def pooled(found: list[tuple[float, float]]) -> float:
    """The hold's count from each stratum's (missing, weighed trials): the largest missing in
    full, every other at most its weighed trials times the missing rate of the stratum with
    the most weighed trials (module doc)."""
    if not found:
        return 0.0
    missing_top, trials_top = max(found, key=lambda part: (part[1], part[0]))
    rate = missing_top / trials_top if trials_top > 0 else 0.0
    largest = max(range(len(found)), key=lambda n: found[n][0])
    return found[largest][0] + sum(min(missing, trials * rate)
                                   for n, (missing, trials) in enumerate(found)
                                   if n != largest)


def missing_weighed(row: dict[str, Any], allowed: dict[str, float], pool: float,
                    trials: dict[str, float], weight: dict[str, float]) -> float | None:
    """The row's `opinions_missing_weighed` inside the strata: every key's missing rows as ONE
    pool (`parts`, `pooled`; module doc). `allowed`: each history key's allowance; `pool`: the
    keys absent from the history's shared one; `trials` and `weight`: each key's over both
    arms. None: a row without per-key `missing` (an older server), counted as it came."""
    found = parts(row, allowed, pool, trials, weight)
    return None if found is None else pooled(found)
