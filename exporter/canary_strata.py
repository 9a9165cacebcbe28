"""The canary's strata: each client key's requests count at most its share of the route's
traffic before the canary (issue 14, r14d HIGH 2).

Requests drawn at random count one each, whatever key sent them, so one key's burst of cheap
requests (`max_tokens=1`, which no fine-tune fails) right after a promotion filled the error
test and `min_requests`: a canary failing 12% of the apps' real requests was promoted after 10
of them. Here the canary's period is post-stratified by client key (`route.client_key`,
storage/route_health.py `by_key`): a key's *share* is its part of the alias's traffic in the
`history_hours` before the canary (the window the history baseline reads), and on each arm a
key's weighed trials and failures are cut so that it counts at most that share.

The scale: on an arm, key k with `n_k` trials and share `s_k` (renormalised over the keys with
trials on that arm) needs a total of `n_k / s_k` to be exactly its share. The scale `T` is the
share-weighted median of those totals: the keys carrying at least half of the usual traffic
count in full (they are at or under their share), every key above its share counts `s_k * T`.
So keys with less than half of the usual traffic can neither dilute the test (their requests
count at most their share of the majority's) nor hold it (the scale is the majority's, not the
thinnest key's; a usual key silent during the canary is simply left out). No weight is above
1: the weighed count is at most the real one, and, the weights being at most 1, at most the
Kish effective size (sum w)^2 / sum w^2 of the weighed sample, so the test reads no more
evidence than it has (it may read less: under-represented keys are not weighed up).

A key absent from the history counts as `NEW_KEY_SHARE` of it (a new app, or a key made for a
burst). Rows from before rows carried their key (`""`) tell no share: a history without any
keyed row gives no strata. One key (or only the anonymous client: no issued keys, no checked
app keys) on an arm gives exactly the unstratified counts.
"""

from __future__ import annotations

from typing import Any

NEW_KEY_SHARE = 0.05
"""The share of the route's usual traffic a client key absent from the history counts as."""

UNKNOWN_KEY = ""
"""`by_key`'s key of rows without `route.client_key` (written before rows carried it)."""


def shares_of(history_targets: list[dict[str, Any]]) -> dict[str, float] | None:
    """Each client key's share of the alias's traffic in the history window, from the health
    rows of every target there (`by_key` traffic); None when no row there carried its key."""
    traffic: dict[str, float] = {}
    for row in history_targets:
        for key, counts in (row.get("by_key") or {}).items():
            if key != UNKNOWN_KEY:
                traffic[key] = traffic.get(key, 0.0) + float(counts.get("traffic", 0))
    total = sum(traffic.values())
    if total <= 0:
        return None
    return {key: amount / total for key, amount in traffic.items() if amount > 0}


def keyed(row: dict[str, Any]) -> bool:
    """Whether the arm's row has requests from more than one client key (strata to weigh)."""
    return sum(1 for counts in (row.get("by_key") or {}).values()
               if counts.get("trials", 0) > 0) > 1


def stratified(row: dict[str, Any], shares: dict[str, float] | None) -> dict[str, Any]:
    """The arm's health row with its `weighed_requests` and `weighed_errors` (what the error
    test and `min_requests` read) cut, each key's to its share (module doc); the first ones
    kept as `unstratified_requests` / `unstratified_errors`. The row as it is without shares,
    without `by_key` (an older server) or with one key there."""
    keys = {key: counts for key, counts in (row.get("by_key") or {}).items()
            if counts.get("trials", 0) > 0}
    if shares is None or len(keys) < 2:
        return row
    kept = scaled(keys, shares)
    trials = sum(kept.values())
    failures = sum(counts["failures"] * kept[key] / counts["trials"]
                   for key, counts in keys.items())
    return {**row, "weighed_requests": round(trials, 6),
            "weighed_errors": round(min(failures, trials), 6),
            "unstratified_requests": row.get("weighed_requests", row.get("requests", 0)),
            "unstratified_errors": row.get("weighed_errors", row.get("errors", 0))}


def scaled(keys: dict[str, dict[str, float]], shares: dict[str, float]) -> dict[str, float]:
    """Each key's trials as counted: at most its share of the scale (module doc)."""
    raw = {key: shares.get(key, NEW_KEY_SHARE) for key in keys}
    total = sum(raw.values())
    share = {key: s / total for key, s in raw.items()}
    needs = sorted((keys[key]["trials"] / share[key], share[key]) for key in keys)
    carried, scale = 0.0, needs[-1][0]
    for need, part in needs:
        carried += part
        if carried >= 0.5 - 1e-12:
            scale = need
            break
    return {key: min(counts["trials"], share[key] * scale) for key, counts in keys.items()}
