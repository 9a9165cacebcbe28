"""The canary's strata: each client key's requests during the canary count at most its own
usual rate of requests before it (issue 14, r14d HIGH 2, r14e HIGH 1-2, MED 3, r14j HIGH 1,
MED 2, r14k MED 3, r14l HIGH 1-2, MED 3, LOW 4).

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
keys made for a burst) ALWAYS share ONE allowance together, split in proportion to their
trials: `NEW_KEYS_PART` of the route's whole rate, so many fresh keys weigh as one new app
(r14e HIGH 2). They never inherit the allowances of the history's keys silent during the
canary (a nightly batch, an app in another timezone, the old key of a rotation): with those, a
fresh key's one-token requests (5 per app request) got a canary failing 12% of an app's
requests promoted after 30-40 of them whenever some history key was quiet (r14j HIGH 1).

And that allowance is at most `NEW_KEYS_PART` x SLACK of what the live history keys count
during the canary (`new_keys_allowance`): inside it, fresh keys' cheap requests dilute the
errors of every fresh key (a rotated app's among them), so the new keys must never outweigh
the usual ones, and beside no live history key they count nothing. With only the one
allowance, a canary failing 12% of a rotated app's requests beside 5 fresh keys sending one
one-token request each per app request was still promoted, later (after a median 1,600 app
requests at a 90% share: `python bench/canary_strata.py --cap 6000 --only "5 fresh keys"`).
With every history key live at its usual rate the bound equals the route's part; with some
silent (or rotated without a link) the new keys count less: slower, never wrong.

Nothing tells a rotated app's new key from a fresh key an attacker holds, so a rotation is
never guessed (r14l HIGH 1-2, MED 3): the guess made for r14k HIGH 2 (no live key in the
history: the fresh keys shared the route's whole rate, each up to the largest history key's
allowance, max-min fair) let N fresh keys sending one-token requests count N times the app (a
canary failing 12% of a rotated app's requests promoted in 92-100% of runs beside 5 such
keys), let a history key silent during the canary (a nightly batch) set that cap, and any live
history key (a monitor) switched it off. A rotation is made explicit instead: `tuneloop keys
rotate` records the new key as the old one's successor, and route health reads every key of
the chain under its `stratum` (storage/route_health_keys.py), so the chain is ONE key here,
its allowance its history's, counted once. An unlinked rotation counts as a new app: judged on
the new keys' part, slower (nothing at all beside no live history key: the canary expires at
`max_hours` and is rolled back, the safe side), never a wrong decision. A route whose only
live key is a fresh one has one key over both arms and is judged unstratified (below).

The canary's elapsed time is the time it was open: a re-opened canary's counts its earlier
windows' open time and its own, never the time it was closed (r14l LOW 4: a key silent while
the canary was closed had that time's allowance to spend at the re-open;
exporter/cycle_canary.py `open_seconds`).

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

`min_requests` counts the health's `counted_requests` (judged requests, a sticky user's up
to 4 x `max_requests_per_user`: storage/route_health.py), each key's within its allowance (the
same weights made from the keys' `judged`, the unit the allowance is in, applied to their
`counted`), while the tests stay on the weighed counts (r14m MED 3). Weighed per sticky user,
the canary's count could never pass `max_requests_per_user` x the users drawn onto it: at a
10% canary a route with fewer than about 200 user ids (20 on the canary) never reached 100, and
every good canary expired at `max_hours`, every cycle. The minimum asks "has the canary served
enough of the route's traffic, from enough users", which users that come back do serve (5 of
them make up 100; one heavy user at most a fifth); whether that is evidence enough is the
sequential test's part, and it still weighs a user at most 5. This opens nothing to another
key: a key's count is capped by its allowance as before, and a key could always send without
user ids (each request its own cluster, weighed as counted).

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
    """How long the canary has been open (its earlier windows' too when re-opened)."""

    def allowances(self) -> dict[str, float]:
        return {key: rate * self.elapsed_s * SLACK for key, rate in self.rates.items()}

    def new_keys_part(self) -> float:
        """The allowance the keys absent from the history share: `NEW_KEYS_PART` of the
        route's usual rate (every history key's) times the elapsed time and SLACK."""
        return NEW_KEYS_PART * sum(self.rates.values()) * self.elapsed_s * SLACK


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


def keys_of(*rows: dict[str, Any], field: str = "trials") -> dict[str, float]:
    """Each client key's trials (or `field`, e.g. `judged`) over the arms' rows (keys with no
    trials left out). A key without `field` (an older server): its trials."""
    trials: dict[str, float] = {}
    for row in rows:
        for key, counts in (row.get("by_key") or {}).items():
            if counts.get("trials", 0) > 0:
                amount = float(counts.get(field, counts["trials"]))
                trials[key] = trials.get(key, 0.0) + amount
    return trials


def counted(row: dict[str, Any]) -> float:
    """What `min_requests` counts of an arm's row: its `counted_requests` (module doc), else
    its weighed requests (a row from an older server or a simulation without them)."""
    for field in ("counted_requests", "weighed_requests", "requests", "trials"):
        if field in row:
            return float(row[field])
    return 0.0


def new_keys_allowance(strata: Strata, trials: dict[str, float]) -> float:
    """The ONE allowance the keys absent from the history share: `new_keys_part`, and at
    most `NEW_KEYS_PART` x SLACK of what the live history keys count (`trials`: each key's
    over both arms), so the new keys never outweigh the usual ones (module doc)."""
    allowed = strata.allowances()
    counted = sum(min(n, allowed[key]) for key, n in trials.items() if key in allowed)
    return min(strata.new_keys_part(), NEW_KEYS_PART * SLACK * counted)


def weights(strata: Strata, trials: dict[str, float]) -> dict[str, float]:
    """Each key's weight (at most 1) over both arms: its allowance over its trials; the keys
    absent from the history their ONE shared allowance over their trials together (module
    doc)."""
    allowed = strata.allowances()
    fresh = sum(n for key, n in trials.items() if key not in allowed)
    pool = new_keys_allowance(strata, trials)
    return {key: min(1.0, (allowed[key] / n) if key in allowed else pool / fresh)
            for key, n in trials.items()}


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
    raw = weights(strata, keys_of(canary, stable, field="judged"))
    return (_weighed(canary, weight, strata, trials, raw),
            _weighed(stable, weight, strata, trials, raw))


def _weighed(row: dict[str, Any], weight: dict[str, float], strata: Strata,
             all_trials: dict[str, float], raw: dict[str, float]) -> dict[str, Any]:
    keys = {key: counts for key, counts in (row.get("by_key") or {}).items()
            if counts.get("trials", 0) > 0}
    trials = sum(counts["trials"] * weight[key] for key, counts in keys.items())
    failures = sum(counts["failures"] * weight[key] for key, counts in keys.items())
    judged = sum(counts.get("counted", counts["trials"]) * raw[key]
                 for key, counts in keys.items())
    cut = {**row, "weighed_requests": round(trials, 6), "counted_requests": round(judged, 6),
           "weighed_errors": round(min(failures, trials), 6),
           "unstratified_counted": row.get("counted_requests", row.get("weighed_requests", 0)),
           "unstratified_requests": row.get("weighed_requests", row.get("requests", 0)),
           "unstratified_errors": row.get("weighed_errors", row.get("errors", 0))}
    missing = missing_weighed(row, strata.allowances(), new_keys_allowance(strata, all_trials),
                              all_trials, weight)
    if missing is not None and "opinions_missing_weighed" in row:
        cut["opinions_missing_weighed"] = round(missing, 6)
        cut["unstratified_missing"] = row["opinions_missing_weighed"]
    return cut
