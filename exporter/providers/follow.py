"""Follow a fine-tuning job to its end, through dropped connections (the article's
`fine_tunes.follow`).

The job runs at the provider whatever happens here, so following is only reading: new events
since the last one seen, then the job's state. A failed read (connection refused, timeout,
429, 5xx) is retried with exponential backoff, resuming after the last event seen, so
nothing is shown twice or skipped. Re-attaching later (a new process, `tuneloop jobs follow
JOB`) is the same call with the job id and, if it was kept, the last event id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from exporter.providers.base import FineTuneProvider, JobEvent, JobInfo, TransientProviderError
from tuneloop.errors import ProviderError


@dataclass(frozen=True)
class Backoff:
    """Polling: `poll` seconds, growing by `factor` up to `idle_max` while nothing happens.
    Failures: `initial` seconds, growing by `factor` up to `maximum`, giving up after
    `give_up_after` seconds without a successful read."""

    poll: float = 2.0
    idle_max: float = 30.0
    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    give_up_after: float = 3600.0


class FollowObserver(Protocol):
    def event(self, event: JobEvent) -> None: ...

    def status(self, job: JobInfo) -> None: ...

    def connection_lost(self, error: Exception, retry_in: float) -> None: ...


class QuietObserver:
    def event(self, event: JobEvent) -> None:
        pass

    def status(self, job: JobInfo) -> None:
        pass

    def connection_lost(self, error: Exception, retry_in: float) -> None:
        pass


@dataclass(frozen=True)
class FollowResult:
    job: JobInfo
    last_event_id: str | None
    events: int  # shown by this call
    reconnects: int


def follow(
    provider: FineTuneProvider,
    job_id: str,
    *,
    last_event_id: str | None = None,
    observer: FollowObserver | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FollowResult:
    """Show the job's events (after `last_event_id`) until it succeeds, fails or is cancelled."""
    watch = observer or QuietObserver()
    plan = backoff or Backoff()
    shown = reconnects = 0
    idle, failing_since = plan.poll, None
    retry = plan.initial
    while True:
        try:
            events = provider.events_after(job_id, last_event_id)
            for event in events:
                watch.event(event)
                last_event_id = event.id
            shown += len(events)
            job = provider.retrieve(job_id)
            watch.status(job)
            if job.done:
                tail = provider.events_after(job_id, last_event_id)  # written as it ended
                for event in tail:
                    watch.event(event)
                    last_event_id = event.id
                return FollowResult(job, last_event_id, shown + len(tail), reconnects)
        except TransientProviderError as exc:
            now = clock()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= plan.give_up_after:
                raise ProviderError(
                    f"the provider has been unreachable for {now - failing_since:.0f} s while "
                    f"following {job_id}; the job goes on: re-attach with "
                    f"`tuneloop jobs follow {job_id}`"
                ) from exc
            reconnects += 1
            watch.connection_lost(exc, retry)
            sleep(retry)
            retry = min(plan.maximum, retry * plan.factor)
            continue
        failing_since, retry = None, plan.initial
        idle = plan.poll if events else min(plan.idle_max, idle * plan.factor)
        sleep(idle)
