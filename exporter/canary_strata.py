"""The canary's strata: each client key's requests during the canary count at most its own
usual rate of requests before it (issue 14, r14d HIGH 2, r14e HIGH 1-2, MED 3, r14j HIGH 1,
MED 2, r14k MED 3).

Requests drawn at random count one each, whatever key sent them, so one key's burst of cheap
requests (`max_tokens=1`, which no fine-tune fails) right after a promotion filled the error
test and `min_requests`: a canary failing 12% of the apps' real requests was promoted after 10
of them. Here the canary's period is post-stratified by client key (`route.client_key`,
storage/route_health.py `by_key`).

A key's *allowance* is its own rate of judged requests (`judged`: what the error test counts,
not 4xx nor unjudged rows, each request once) in the `history_hours` before the canary (the
window the history baseline reads; from its first row on when the alias's traffic began later),
times the canary's elapsed time, times `SLACK` (usual variation must not cut an honest key).
Over both arms a key counts min(its trials, its allowance), each arm its part of that in
proportion to its trials there (its failures alike); its trials there are weighed per sticky
user as the error test weighs them.

The rate is read from the raw judged count, not from the history's `trials` weighed per sticky
user (r14j MED 2): those cap a user at `max_requests_per_user` over the whole 24 h window while
during the canary each user's first 5 requests count at once, so an app whose users come back
was held to a fraction of its real rate as soon as any second key (another app, a monitor) was
on the route (a good 50% canary with 60 users of 20 requests each: promoted after 360 app
requests, 240 without the monitor). This opens nothing: a key could always send its history
without user ids (each request its own cluster, `trials` = `judged`) and get the same
allowance; and the canary's side is still weighed per user, so a key's cheap requests count
no more than before within it. A server without `judged` (an older one): `trials`.

Absolute rates, not shares of the canary's traffic: a key under its allowance never shrinks
another key's count, so a usual majority key sending a handful of requests during the canary
holds nothing (r14e HIGH 1: as shares it set the scale and cut every other key to almost
nothing).

Keys absent from the history (a new app, a rotated key, a key left idle for `history_hours`,
keys made for a burst) share ONE allowance together, split in proportion to their trials:
`NEW_KEYS_PART` of the route's whole rate, so many fresh keys weigh as one new app (r14e
HIGH 2). They never inherit the allowances of the history's keys silent during the canary (a
nightly batch, an app in another timezone, the old key of a rotation) while some history key
is live: with those, a fresh key's one-token requests (5 per app request) got a canary failing
12% of an app's requests promoted after 30-40 of them whenever some history key was quiet
(r14j HIGH 1), and a fresh key cannot be told from the rotated one. So an honest key rotation
beside a live history key counts as a new app: slower decisions, never a wrong one.

When NO live key is in the history (a single app rotated its key, every key rotated after a
leak), that 5% was all the route had: a rotated app beside any second fresh key (an honest
monitor sending 1 request per 50) was weighed on a tenth of its traffic and a bad canary
expired undecided at `max_hours`, twice with the re-open (r14k HIGH 2). Then the fresh keys
share the route's whole usual rate (`route_part`), each at most the largest history key's
allowance (`largest_part`), split max-min fair (`fair_shares`): a key under the level keeps
all it sent, the rest count alike, so a flood of trials cannot squeeze the app's share (a
proportional split would). r14j HIGH 1 stays closed (a live history key keeps the fresh keys
in their 5%). What it cannot do: with every key fresh nothing tells the app from
keys an attacker holds: each fresh key counts up to the largest history key's allowance, so N
keys sending one-token requests count N times the app, and a history key silent during the
canary (a nightly batch) sets that cap (r14l HIGH 1-2: a canary failing 12% of a rotated
app's requests promoted in 92-100% of runs beside 5 such keys; README limits). The mend needs
the rotation made explicit (the new key given the old key's stratum), not guessed. A route
whose only live key is the rotated one has one key over both arms and is judged unstratified
(below).

A key's count in the history is read per part of the window (an hour of a day-long history),
each part at most `BURST_CAP` (3) times the route's median part (exporter/canary_bursts.py):
a one-off burst of cheap requests before the canary buys a key the allowance of three usual
hours, not of the burst (r14k MED 3: 2.5 times the app's day sent in one go got a canary
failing 12% of the app's requests promoted after 60 of them).

Rows from before rows carried their key (`""`) tell no rate: a history without any keyed
judged row gives no strata. No weight is above 1, so the weighed count is at most the real one
(and at most the Kish effective size of the weighed sample). One key, or only the anonymous
client (no issued keys, no checked app keys), over both arms gives exactly the unstratified
counts.

The rows a promotion must survive counting as the canary's errors (`opinions_missing_weighed`)
are weighed in the same strata, every key's as ONE pool (exporter/canary_missing.py: r14e MED
4, r14k HIGH 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from exporter.canary_bursts import usual_counts
from exporter.canary_missing import missing_weighed

SLACK = 2.0
"""How far above its usual rate a key's requests during the canary still count in full."""

NEW_KEYS_PART = 0.05
"""The part of the route's usual rate the keys absent from the history share (all their
allowance: never the silent history keys', module doc)."""

UNKNOWN_KEY = ""
"""`by_key`'s key of rows without `route.client_key` (written before rows carried it)."""

MIN_HISTORY_SECONDS = 1.0
"""The shortest history a rate is read over (a history of one instant gives no rate)."""


@dataclass(frozen=True)
class Strata:
    """Each history key's judged requests per second before the canary, and how long the
    canary has run: what the allowances are made of (module doc)."""

    rates: dict[str, float]
    elapsed_s: float

    def allowances(self) -> dict[str, float]:
        return {key: rate * self.elapsed_s * SLACK for key, rate in self.rates.items()}

    def new_keys_part(self) -> float:
        return NEW_KEYS_PART * self.route_part()

    def route_part(self) -> float:
        """The route's usual rate (every history key's) times the elapsed time and SLACK."""
        return sum(self.rates.values()) * self.elapsed_s * SLACK

    def largest_part(self) -> float:
        """The largest history key's allowance: what one fresh key counts at most when every
        live key is fresh (r14k HIGH 2)."""
        return max(self.rates.values(), default=0.0) * self.elapsed_s * SLACK


def history_seconds(history_targets: list[dict[str, Any]], opened: datetime,
                    history_hours: float) -> float:
    """The history window's length: `history_hours` before `opened`, from the alias's first
    row there (`first_at`) when its traffic began later (a rate over hours without traffic
    would cut every key). A server without `first_at` (an older one): the whole window."""
    window = history_hours * 3600
    firsts = [datetime.fromisoformat(row["first_at"]) for row in history_targets
              if row.get("first_at")]
    if firsts:
        window = min(window, (opened - min(firsts)) / timedelta(seconds=1))
    return max(window, MIN_HISTORY_SECONDS)


def strata_of(history_targets: list[dict[str, Any]], history_s: float, elapsed_s: float
              ) -> Strata | None:
    """The strata from the health rows of every target in the history window (`by_key`
    `judged`, each judged request once; `trials` from an older server) over `history_s`
    seconds, the canary open for `elapsed_s`; None when no judged row there carried its key.
    A burst in the history counts as a few of the route's usual hours (`judged_parts`,
    exporter/canary_bursts.py, r14k MED 3)."""
    trials = usual_counts(history_targets, UNKNOWN_KEY)
    if trials is None:
        trials = _whole_counts(history_targets)
    rates = {key: amount / history_s for key, amount in trials.items() if amount > 0}
    if not rates:
        return None
    return Strata(rates, max(elapsed_s, 0.0))


def _whole_counts(history_targets: list[dict[str, Any]]) -> dict[str, float]:
    """Each key's whole judged count (a server without `judged_parts`)."""
    trials: dict[str, float] = {}
    for row in history_targets:
        for key, counts in (row.get("by_key") or {}).items():
            if key != UNKNOWN_KEY:
                judged = counts.get("judged", counts.get("trials", 0))
                trials[key] = trials.get(key, 0.0) + float(judged)
    return trials


def keys_of(*rows: dict[str, Any]) -> dict[str, float]:
    """Each client key's trials over the arms' rows (keys with none left out)."""
    trials: dict[str, float] = {}
    for row in rows:
        for key, counts in (row.get("by_key") or {}).items():
            if counts.get("trials", 0) > 0:
                trials[key] = trials.get(key, 0.0) + float(counts["trials"])
    return trials


def weights(strata: Strata, trials: dict[str, float]) -> dict[str, float]:
    """Each key's weight (at most 1) over both arms: its allowance over its trials; the keys
    absent from the history their shared allowance over their trials together, or, when no
    live key is in the history (`all_fresh`), each its max-min fair share of the route's
    usual rate over its trials (r14k HIGH 2, module doc)."""
    allowed = strata.allowances()
    if all_fresh(strata, trials):
        share = fair_shares(trials, strata.route_part(), strata.largest_part())
        return {key: min(1.0, share[key] / n) for key, n in trials.items()}
    fresh = sum(n for key, n in trials.items() if key not in allowed)
    pool = strata.new_keys_part()
    return {key: min(1.0, (allowed[key] / n) if key in allowed else pool / fresh)
            for key, n in trials.items()}


def all_fresh(strata: Strata, trials: dict[str, float]) -> bool:
    """No key live during the canary is in the history (a rotation of every app key, a new
    key beside the rotated one): the fresh keys then take the route's usual rate."""
    return bool(trials) and not any(key in strata.rates for key in trials)


def fresh_pool(strata: Strata, trials: dict[str, float]) -> float:
    """The allowance the keys absent from the history share: the route's usual rate when no
    live key is in the history, else `NEW_KEYS_PART` of it."""
    return strata.route_part() if all_fresh(strata, trials) else strata.new_keys_part()


def fair_shares(trials: dict[str, float], pool: float, cap: float) -> dict[str, float]:
    """`pool` split max-min fair over the keys' `trials`, none above `cap` nor its trials:
    keys under the level keep what they sent, the rest share alike (a key's flood cannot
    squeeze another key's share)."""
    share: dict[str, float] = {}
    left, keys = pool, sorted(trials, key=lambda k: trials[k])
    for n, key in enumerate(keys):
        share[key] = max(0.0, min(trials[key], cap, left / (len(keys) - n)))
        left -= share[key]
    return share


def stratified(canary: dict[str, Any], stable: dict[str, Any], strata: Strata | None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arms' health rows with their `weighed_requests` and `weighed_errors` (what the
    error test and `min_requests` read) cut, each key's to its allowance (module doc); the
    first ones kept as `unstratified_requests` / `unstratified_errors`. The rows as they are
    without strata, without `by_key` (an older server) or with one key over both arms."""
    trials = keys_of(canary, stable)
    if strata is None or len(trials) < 2:
        return canary, stable
    weight = weights(strata, trials)
    return (_weighed(canary, weight, strata, trials),
            _weighed(stable, weight, strata, trials))


def _weighed(row: dict[str, Any], weight: dict[str, float], strata: Strata,
             all_trials: dict[str, float]) -> dict[str, Any]:
    keys = {key: counts for key, counts in (row.get("by_key") or {}).items()
            if counts.get("trials", 0) > 0}
    trials = sum(counts["trials"] * weight[key] for key, counts in keys.items())
    failures = sum(counts["failures"] * weight[key] for key, counts in keys.items())
    cut = {**row, "weighed_requests": round(trials, 6),
           "weighed_errors": round(min(failures, trials), 6),
           "unstratified_requests": row.get("weighed_requests", row.get("requests", 0)),
           "unstratified_errors": row.get("weighed_errors", row.get("errors", 0))}
    missing = missing_weighed(row, strata.allowances(), fresh_pool(strata, all_trials),
                              all_trials, weight)
    if missing is not None and "opinions_missing_weighed" in row:
        cut["opinions_missing_weighed"] = round(missing, 6)
        cut["unstratified_missing"] = row["opinions_missing_weighed"]
    return cut
