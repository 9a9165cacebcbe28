"""A client key's usual judged count in the canary's history, a burst there cut to the route's
usual pace (issue 14, r14k MED 3).

A key's allowance during the canary is its rate in the `history_hours` before it
(exporter/canary_strata.py). Read as its whole judged count over the window, a one-off burst of
one-token requests anywhere in that window bought the key an allowance: a burst of 2.5 times
the app's day, sent in the second before the open, got a canary failing 12% of the app's
requests promoted after 60 of them (85-100% of simulated runs; 1 times the day: 19-51%).

So the count is read per part of the window (storage/route_health.py `judged_parts`: the window
from its first row to the open cut in `HISTORY_PARTS` equal parts, the hours of a day-long
history), and in each part a key counts at most `BURST_CAP` times the route's usual part: the
median, over the parts where the route had any judged request, of all keys' judged requests
there (the rows without a key too). What a key sent at the route's usual pace counts in full,
however it was spread (a session key active for one hour, an office-hours app: parts where the
route was idle do not lower the median); a burst counts as `BURST_CAP` usual parts. So a key
buys an allowance of A only by sending for about A / (`BURST_CAP` x the route's usual part)
parts of the window, not in one second.

Why this estimator:
- the median, not the mean, of the route's parts: many keys bursting together (keys are cheap)
  lift one part, not the median (with the mean, 12 keys bursting in one hour would each be
  allowed their whole burst);
- the route's parts, not the key's own: a key's own median is 0 for a session key or a nightly
  batch and would cut honest keys to nothing (r14k MED 4 would get worse);
- over the parts where the route was active, not all: an app active 8 hours a day keeps its
  usual hour;
- `BURST_CAP` 3, not 2: an honest route's busiest hour is above twice its median hour when the
  counts are small (Poisson at 2 an hour: 6 is not rare); a flat app at any volume is never
  cut, and a burst still counts as 3 usual hours.

In `python bench/canary_strata.py --runs 100 --only "history burst"` (apps 70/30, a flat
history, a canary failing 12%, the burst's key sending 5 one-token requests per app request
during it): a burst of 2.5 (1) times the apps' day in one hour was promoted in 94-100%
(25-51%) of runs, now rolled back in 100% after 525 / 140 app requests at 90% / 50%, as
without the burst; spread over 6 hours, rolled back in 79-87% (promoted 13-17%).

What it gives up: an honest key whose history is one heavy hour (a nightly batch beside a
steady app) gets the allowance of 3 usual hours, so its requests during the canary count less
(slower decisions, never a wrong one). What it cannot do: a key sending for hours still buys
an allowance (at 3 usual hours an hour, 8 hours give a day's worth), and a key sending in half
the window's active parts or more sets the median itself (2.5 times the day over 12 hours is
promoted as before).

A history from a server without `judged_parts` (an older one): each key's whole count, as
before.
"""

from __future__ import annotations

import statistics
from typing import Any

BURST_CAP = 3.0
"""How many of the route's usual history parts a key counts at most in one part."""


def usual_counts(history_targets: list[dict[str, Any]], unknown_key: str = ""
                 ) -> dict[str, float] | None:
    """Each key's judged count in the history (`by_key` over every target) with every part
    capped at `BURST_CAP` x the route's usual part (module doc); the unknown key (`""`) counts
    in the route's parts but gets no entry. None when some key's row has no `judged_parts`
    (an older server: the caller reads the whole counts)."""
    parts: dict[str, list[float]] = {}
    for row in history_targets:
        for key, counts in (row.get("by_key") or {}).items():
            found = counts.get("judged_parts")
            if not isinstance(found, list):
                return None
            mine = parts.setdefault(key, [0.0] * len(found))
            if len(mine) != len(found):
                return None
            for n, count in enumerate(found):
                mine[n] += float(count)
    cap = BURST_CAP * usual_part(list(parts.values()))
    return {key: sum(min(count, cap) for count in mine)
            for key, mine in parts.items() if key != unknown_key}


def usual_part(parts: list[list[float]]) -> float:
    """The median, over the parts where any key had a judged request, of all keys' judged
    requests there (0 with none)."""
    totals = [sum(column) for column in zip(*parts, strict=True)]
    active = [total for total in totals if total > 0]
    return statistics.median(active) if active else 0.0
