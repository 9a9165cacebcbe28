"""`tuneloop cycle`: the scheduled job, a state machine over the steps of `cycle_steps`.

(exporter/cycle_watch.py looks at an open canary between scheduled runs.)
Each invocation takes the cycle's lease (another holder's live lease: it does nothing and
says so), continues the cycle's active run or starts a new one, and runs steps until the run
ends or a step says to wait (a job still training, a canary still gathering traffic). Every
transition is recorded through the admin API before the next step, so a rerun continues
where the last one stopped. A failing step is retried by later invocations up to
`max_step_attempts`, except the fine-tune step: it is marked started before the job is
created and never retried, so one run never starts two jobs. A run that fails at `watch`
leaves its canary on the route and says so (naming the route); the next invocation then
starts a run at `watch` for that canary (`settling_run`) before anything new is trained or
evaluated, so no canary stays open unwatched and past its `max_hours`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.cycle_canary import canary_step, left_open, unwatched_warning, watch_step
from exporter.cycle_checkpoints import checkpoints_step
from exporter.cycle_config import CycleConfig
from exporter.cycle_steps import FIRST_STEP, STEPS, StepContext, StepResult
from exporter.finetune import JobProvider
from tuneloop.client import AdminClient
from tuneloop.errors import Conflict, TuneloopError

log = logging.getLogger("tuneloop.cycle")
NEVER_RETRIED = frozenset({"finetune"})
ALL_STEPS = {**STEPS, "checkpoints": checkpoints_step, "canary": canary_step,
             "watch": watch_step}


@dataclass(frozen=True)
class CycleOutcome:
    status: str  # busy | active (waiting) | finished | failed | error (will be retried)
    run: dict[str, Any] | None
    message: str
    warnings: tuple[str, ...] = ()
    """The server's warnings on what this invocation's steps did (a promotion's)."""

    def to_json(self) -> dict[str, Any]:
        run = self.run or {}
        return {"status": self.status, "message": self.message, "run": run.get("id"),
                "step": run.get("step"), "outcome": run.get("outcome"),
                "warnings": list(self.warnings)}


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseKeeper:
    """Renews the lease in the background while a long step runs (a job's wait, an
    evaluation); the server refuses step records from a holder whose lease was lost."""

    def __init__(self, client: AdminClient, cycle: str, holder: str, ttl_s: float):
        self.client, self.cycle, self.holder, self.ttl_s = client, cycle, holder, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="cycle-lease", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.client.acquire_cycle_lease(self.cycle, self.holder, self.ttl_s)
            except TuneloopError as exc:
                log.warning("could not renew the lease of cycle %s: %s", self.cycle, exc)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(TuneloopError):
            self.client.release_cycle_lease(self.cycle, self.holder)


SETTLED_STATE_SKIPPED = ("attempts",)


def settling_run(client: AdminClient, config: CycleConfig, holder: str,
                 say: Callable[[str], None] = lambda _: None) -> dict[str, Any] | None:
    """A new run that watches the canary an ended run left open (`left_open`), or None.
    It takes that run's state (model, promotion time, data keys) and starts at `watch`, so
    nothing new is trained or evaluated while a canary of the cycle is open and unwatched. A
    superseded canary put back by a rollback is judged on the traffic since the route last
    changed (it was off the route before) and its `max_hours` counts from then."""
    orphan = left_open(client, config)
    if orphan is None:
        return None
    state = {k: v for k, v in (orphan.get("state") or {}).items()
             if k not in SETTLED_STATE_SKIPPED}
    if orphan.get("status") == "failed":
        why = f"run {orphan['id']} failed with its canary of {state['fine_tuned_model']} open"
    else:
        back = client.route_canary(config.alias).get("changed_at")
        if back and datetime.fromisoformat(back) > datetime.fromisoformat(state["promoted_at"]):
            state["promoted_at"] = back
        why = (f"the canary of {state['fine_tuned_model']} that run {orphan['id']} opened was "
               f"superseded, then put back by a rollback (at {state['promoted_at']}): it is open")
    message = f"{why} on route {config.alias!r}: watching it before anything new"
    say(message)
    run = client.create_cycle_run(config.name, holder, "watch", config.model_dump(mode="json"))
    return client.record_cycle_step(run["id"], holder, "settle", "done",
                                    state={**state, "settles": orphan["id"]},
                                    detail={"settles": orphan["id"], "message": message},
                                    next_step="watch")


RUN_IDENTITY = (("alias",), ("dataset", "name"), ("finetune", "provider"),
                ("finetune", "base_model"))
"""What a run is about: an active run goes on only under a config that agrees on these."""


def config_moved(run: dict[str, Any], config: CycleConfig) -> str | None:
    """Why the active `run` cannot go on under `config` (a config copied with the same `name`
    for another alias, or edited mid-run: its model would open a canary elsewhere), or None."""
    recorded = run.get("config")
    if not isinstance(recorded, dict):
        return None  # a run from before configs were kept
    now = config.model_dump(mode="json")
    changed = []
    for path in RUN_IDENTITY:
        before: Any = recorded
        after: Any = now
        for key in path:
            before = before.get(key) if isinstance(before, dict) else None
            after = after.get(key) if isinstance(after, dict) else None
        if before != after:
            changed.append(f"{'.'.join(path)} {before!r} -> {after!r}")
    if not changed:
        return None
    return (f"run {run['id']} of cycle {config.name!r} is active (step {run.get('step')}) and "
            f"was started with another config: {'; '.join(changed)}. It goes on only with the "
            "config it started with (see `GET /admin/cycle-runs/" + str(run["id"]) + "`); a "
            "config for another alias or dataset needs its own `name`")


def _active_run(client: AdminClient, config: CycleConfig, holder: str,
                say: Callable[[str], None]) -> dict[str, Any]:
    active = client.cycle_runs(config.name, status="active", limit=1)
    if active:
        run = client.cycle_run(active[0]["id"])
        moved = config_moved(run, config)
        if moved:
            raise Conflict(moved)
        return run
    settling = settling_run(client, config, holder, say)
    if settling is not None:
        return settling
    return client.create_cycle_run(config.name, holder, FIRST_STEP,
                                   config.model_dump(mode="json"))


def record_result(ctx: StepContext, step: str, result: StepResult) -> dict[str, Any]:
    detail = {**result.detail, "warnings": result.warnings} if result.warnings \
        else result.detail
    if result.wait:
        return ctx.client.record_cycle_step(ctx.run["id"], ctx.holder, step, "waiting",
                                            detail=detail, state=result.state)
    over = result.next_step is None
    fields: dict[str, Any] = {"detail": detail, "state": result.state,
                              "next_step": result.next_step}
    if over:
        fields |= {"run_status": "finished", "outcome": result.outcome}
    return ctx.client.record_cycle_step(ctx.run["id"], ctx.holder, step, "done", **fields)


def _record_error(ctx: StepContext, step: str, exc: Exception, max_attempts: int
                  ) -> dict[str, Any]:
    message = (exc.message if isinstance(exc, TuneloopError) else repr(exc))[:2000]
    attempts = dict(ctx.state.get("attempts") or {})
    attempts[step] = int(attempts.get(step, 0)) + 1
    give_up = step in NEVER_RETRIED or attempts[step] >= max_attempts
    fields: dict[str, Any] = {"detail": {"error": message, "attempt": attempts[step]},
                              "state": {"attempts": attempts}, "error": message}
    if give_up:
        fields |= {"run_status": "failed", "outcome": "failed"}
    return ctx.client.record_cycle_step(ctx.run["id"], ctx.holder, step, "error", **fields)


def _drive(ctx: StepContext, config: CycleConfig,
           say: Callable[[str], None]) -> CycleOutcome:
    note = ""
    warnings: list[str] = []
    while ctx.run["status"] == "active" and ctx.run["step"]:
        step = ctx.run["step"]
        say(f"{ctx.run['id']}: {step}")
        try:
            result = ALL_STEPS[step](ctx)
        except Exception as exc:
            if isinstance(exc, Conflict) and exc.code == "lease_lost":
                raise
            if not isinstance(exc, TuneloopError):
                log.exception("cycle %s: step %s failed", config.name, step)
            ctx.run = _record_error(ctx, step, exc, config.max_step_attempts)
            failed = ctx.run["status"] == "failed"
            warning = f"; {unwatched_warning(config.alias, ctx.run)}" \
                if step == "watch" and failed else ""
            return CycleOutcome("failed" if failed else "error",
                                ctx.run, f"step {step} failed: {ctx.run['error']}{warning}",
                                tuple(warnings))
        ctx.run = record_result(ctx, step, result)
        for text in result.warnings:
            say(f"warning: {text}")
        warnings += result.warnings
        if result.note and not result.wait:
            say(result.note)  # e.g. the evaluation's scores with their intervals
        if result.wait:
            return CycleOutcome("blocked" if result.blocked else "active", ctx.run,
                                f"waiting at {step}: {result.note}", tuple(warnings))
        note = result.note
    outcome = ctx.run.get("outcome")
    why = f" ({note})" if note and ctx.run["status"] != "active" else ""
    return CycleOutcome(ctx.run["status"], ctx.run,
                        f"run {ctx.run['id']} ended: {outcome}{why}", tuple(warnings))


def run_cycle(client: AdminClient, config: CycleConfig, *, api_key: str | None = None,
              holder: str | None = None,
              providers: Callable[[str], JobProvider] | None = None,
              say: Callable[[str], None] = lambda _: None,
              force: bool = False) -> CycleOutcome:
    """One invocation of the cycle: continue (or start) its run as far as it goes now.
    `force`: a run that exports now trains even on data and settings an earlier run trained
    on and decided (exporter/cycle_unchanged.py)."""
    holder = holder or default_holder()
    try:
        client.acquire_cycle_lease(config.name, holder, config.lease_seconds)
    except Conflict as exc:
        return CycleOutcome("busy", None, exc.message)
    with LeaseKeeper(client, config.name, holder, config.lease_seconds):
        run = _active_run(client, config, holder, say)
        ignored = force_ignored(run) if force else None
        if ignored:
            say(ignored)
        ctx = StepContext(client, config, run, holder, api_key, providers, force)
        outcome = _drive(ctx, config, say)
    if ignored:
        outcome = dataclasses.replace(outcome, message=f"{outcome.message}; {ignored}")
    return outcome


FORCE_APPLIES = frozenset({"export", "validate"})


def force_ignored(run: dict[str, Any]) -> str | None:
    """What `--force` did not do: it applies to a run that exports (or validates) in this
    invocation; a run already past that (an active run continued, a canary open or being
    settled) goes on as it is. None when force applies."""
    step = run.get("step")
    if step in FORCE_APPLIES:
        return None
    state = run.get("state") or {}
    if state.get("settles"):
        why = (f"run {run['id']} first settles the canary run {state['settles']} left open "
               f"({state.get('fine_tuned_model')})")
    elif step == "watch":
        why = f"run {run['id']} is watching its open canary of {state.get('fine_tuned_model')}"
    else:
        why = f"run {run['id']} is active at step {step}"
    return (f"--force ignored: {why}; it applies to a run that exports: run `tuneloop cycle "
            "--force` again once this run has ended")
