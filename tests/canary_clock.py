"""Canary tests on a count-based clock, not the machine's: what the strata read of time (each
key's rate over the history window, how its requests were spread there, how long the canary
has been open) comes from how many requests were sent, so a decision falls at the same app
request however slow a loaded machine is (exporter/canary_strata.py).

The history is sent through the proxy as fast as it goes, then, the proxy stopped, its rows
are given the times of a schedule (`restamp`); during the canary the watch judges at the
canary's opening plus `STEP_S` per app request sent (`StepContext.now`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tests.store_support import connected

STEP_S = 60.0
"""The app's pace on the count-based clock: one request a minute (a history of 100 app
requests is 100 minutes: the real seconds between the restamp and the canary's opening are
lost in it)."""


def restamp(store: str, phases: Sequence[tuple[int, float]]) -> None:
    """Give the production rows, in the order they were sent, the times of a schedule ending
    a second ago: each phase `(count, step_s)` its next `count` rows `step_s` apart (0: all at
    one instant), after the previous phase's."""
    with connected(store) as con:
        ids = [row_id for [row_id] in con.execute(
            "SELECT id FROM interactions WHERE traffic = 'production' "
            "ORDER BY created_at, id").fetchall()]
        assert len(ids) == sum(count for count, _ in phases), (len(ids), phases)
        at = datetime.now(UTC) - timedelta(seconds=sum(n * step for n, step in phases) + 1)
        done = 0
        for count, step_s in phases:
            for row_id in ids[done:done + count]:
                con.execute("UPDATE interactions SET created_at = ? WHERE id = ?", [at, row_id])
                at += timedelta(seconds=step_s)
            done += count
