"""The cycle watching its open canary between scheduled runs.

`tuneloop cycle --every 6h` runs the cycle every 6 hours and, in between, calls
:func:`watch_canary` every `[canary] watch_seconds`: when the cycle's active run waits at
`watch`, the canary's sequential test (exporter/cycle_canary.py) is evaluated at once, so a bad
canary is rolled back and a good one promoted within seconds of the evidence, not at the next
scheduled run. An undecided look records nothing (the scheduled runs record the waiting step).

One watcher at a time: each look takes the cycle's lease (storage/cycles.py, kept by the proxy
in the shared store), so with several `tuneloop cycle --every` processes (or replicas of the
proxy on Postgres) only the lease holder acts; the others find it busy and look again later.
A look that finds no open canary reads the run list and the route only and takes no lease. A
canary a failed run left open (its watch step kept failing) is settled first: the look opens
a run that watches it (exporter/cycle.py `settling_run`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from exporter.cycle import (
    CycleOutcome,
    config_moved,
    default_holder,
    record_result,
    settling_run,
)
from exporter.cycle_canary import left_open, watch_step
from exporter.cycle_config import CycleConfig
from exporter.cycle_steps import StepContext
from tuneloop.client import AdminClient
from tuneloop.errors import Conflict, TuneloopError


def _open_canary(client: AdminClient, config: CycleConfig) -> str | None:
    active = client.cycle_runs(config.name, status="active", limit=1)
    return str(active[0]["id"]) if active and active[0]["step"] == "watch" else None


def watch_canary(client: AdminClient, config: CycleConfig, *, api_key: str | None = None,
                 holder: str | None = None) -> CycleOutcome:
    """Evaluate the cycle's open canary now: `idle` (none open), `busy` (another holder has
    the lease), `active` (undecided), `blocked` (waits for a person: the route was edited
    during the canary) or `finished` (rolled back or promoted)."""
    if _open_canary(client, config) is None and left_open(client, config) is None:
        return CycleOutcome("idle", None, "no open canary")
    holder = holder or default_holder()
    try:
        client.acquire_cycle_lease(config.name, holder, config.lease_seconds)
    except Conflict as exc:
        return CycleOutcome("busy", None, exc.message)
    try:
        run_id = _open_canary(client, config)  # again, under the lease
        if run_id is None and not client.cycle_runs(config.name, status="active", limit=1):
            settling = settling_run(client, config, holder)  # a failed run's canary
            run_id = None if settling is None else str(settling["id"])
        if run_id is None:
            return CycleOutcome("idle", None, "no open canary")
        run = client.cycle_run(run_id)
        moved = config_moved(run, config)
        if moved:
            return CycleOutcome("error", run, moved)
        ctx = StepContext(client, config, run, holder, api_key)
        result = watch_step(ctx)
        if result.wait:
            # blocked (a person must settle the route) or not, the next look decides again
            return CycleOutcome("blocked" if result.blocked else "active", ctx.run,
                                f"waiting at watch: {result.note}")
        ctx.run = record_result(ctx, "watch", result)
        why = f" ({result.note})" if result.note else ""
        return CycleOutcome(ctx.run["status"], ctx.run,
                            f"run {run_id} ended: {ctx.run.get('outcome')}{why}",
                            tuple(result.warnings))
    finally:
        with contextlib.suppress(TuneloopError):
            client.release_cycle_lease(config.name, holder)


def run_schedule(run_once: Callable[[], object], watch_once: Callable[[], object], *,
                 interval_s: float, watch_s: float, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """Call `run_once` every `interval_s` and `watch_once` every `watch_s` in between, until
    `stop` is set. The callables handle their own errors."""
    while not stop.is_set():
        run_once()
        next_run = clock() + interval_s
        while True:
            left = next_run - clock()
            if left <= 0:
                break
            if stop.wait(min(watch_s, left)):
                return
            if clock() < next_run:
                watch_once()
