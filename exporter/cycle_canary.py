"""The cycle's canary steps: `canary` routes a share of the alias to the candidate, `watch`
decides its fate with the sequential test of exporter/canary_stats.py.

`watch` rolls back as soon as the error rate (or, with enough feedback, the thumbs-down share)
is found worse than the current model's, promotes to 100% as soon as every test finds it no
worse (after `min_requests` canary requests, each sticky user's at most 20 and each client
key's within its usual rate: exporter/canary_strata.py `counted`, and `min_age_minutes`), and
otherwise waits, for at most `max_hours` (then an undecided canary is rolled back, the safe
side). A metric whose current target got too little traffic beside the canary is compared with
that target's traffic in the `history_hours` before the promotion (judged by the canary's rule,
each decision at the bound least favourable to it: exporter/canary_history.py). Requests
count weighed per sticky user (`max_requests_per_user`, storage/route_health.py), and each
client key's at most its own usual rate of requests in those `history_hours`
(exporter/canary_strata.py). The verdict and its statistics go into the step's detail and, on
a decision, into the route history entry of the rollback or promotion (`detail.verdict`). A
canary stuck at its few sticky users' caps says so in its note (exporter/canary_users.py).

A person's edit of the route during the canary (an A/B split of the stable arm, another stable
model) is never overridden: a canary found no worse is then not promoted (the run waits
`blocked` for a person to promote or roll back), and a bad one's rollback takes the canary out
of the edited route (storage/rollback_edits.py). A person's full promotion of the candidate
settles the canary: the run ends `promoted` (by that person), never rolled back. Each write
passes the route history `seq` the decision was made on (`expect_seq`): a route changed in
between refuses it, and the next look decides again.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from shlex import quote
from typing import Any

from exporter.canary_history import (
    DEFAULT_LEVELS,
    Baseline,
    HistoryLevels,
    baseline_of,
    history_doubt,
    history_too_low,
    needs_history,
    weighed,
)
from exporter.canary_stats import CanaryVerdict, SprtParams, bounded_sprt, canary_verdict, sprt
from exporter.canary_strata import (
    Strata,
    counted,
    history_seconds,
    keys_of,
    strata_of,
    stratified,
)
from exporter.canary_users import few_users_warning
from exporter.cycle_config import CanaryConfig, CycleConfig
from exporter.cycle_steps import StepContext, StepResult, end, no_route, open_canary_run
from exporter.exportdir import load_export
from tuneloop.client import AdminClient
from tuneloop.errors import Conflict

_NO_TRAFFIC = {"requests": 0, "errors": 0, "error_rate": 0.0, "weighed_requests": 0.0,
               "weighed_errors": 0.0, "feedback_count": 0,
               "feedback_mean": None, "rated_requests": 0, "thumbs_down": 0, "votes": 0.0,
               "down_votes": 0.0}


def canary_step(ctx: StepContext) -> StepResult:
    manifest = load_export(Path(ctx.state["export_path"]), verify=False).manifest
    suffix, stop = manifest.get("prompt_separator"), manifest.get("stop")
    # trained without a template: the model gets the same strip (and replacement system prompt)
    named = manifest.get("template")
    template: dict[str, Any] = named if isinstance(named, dict) else {}
    candidate, percent = ctx.state["fine_tuned_model"], ctx.config.canary.percent
    route = ctx.client.route_canary(ctx.config.alias)
    waiting = _another_canary(ctx.config.alias, route.get("canary"), candidate)
    if waiting:
        return StepResult("canary", wait=True, note=waiting, blocked=True)
    stable = route.get("stable")  # `current_model`, from the route just read
    if not stable:
        raise no_route(ctx.config.alias)
    evaluated = ctx.state.get("baseline")
    if evaluated and evaluated != stable:
        note = (f"the alias now serves {stable}, not {evaluated} that {candidate} was "
                f"evaluated against: evaluating again before any canary")
        # the canary's earlier evidence was against the other model
        return StepResult("evaluate", state={"evidence_since": None, "evidence_open_s": None},
                          detail={"stable": stable, "evaluated_against": evaluated}, note=note)
    try:
        result = ctx.client.promote(ctx.config.alias, candidate, canary=percent,
                                    expect_seq=route.get("seq"),
                                    prompt_suffix=suffix, stop=stop,
                                    strip_template=template.get("ref"),
                                    system_prompt=template.get("replacement_system_prompt"),
                                    **ctx.state.get("serving", {}))
    except Conflict as exc:  # e.g. a person's A/B split: the route needs a person first
        return StepResult("canary", wait=True, blocked=True,
                          note=f"no canary of {candidate} opened: {exc.message}")
    state = {"promoted_at": result["changed_at"], "stable": stable, "canary_percent": percent}
    detail = {"model": candidate, "canary": percent, "stable": stable}
    warnings = list(result.get("warnings") or [])
    if percent >= 100:
        return StepResult(None, state=state, detail=detail, outcome="promoted",
                          warnings=warnings)
    return StepResult("watch", state=state, detail=detail, warnings=warnings)


def _another_canary(alias: str, episode: dict[str, Any] | None, candidate: str) -> str | None:
    """Why the canary step waits: the route has an open canary of another model (another
    cycle's, a person's); one canary at a time, so neither judges the other's untested model
    as the current one. None when the route has none (or it is this candidate's)."""
    if episode is None or episode.get("model") == candidate:
        return None
    return (f"route {alias!r} has an open canary of {episode.get('model')} "
            f"({episode.get('canary'):g}% since {episode.get('promoted_at')}) that this run did "
            f"not open: one canary at a time, so {candidate} waits until that one is promoted "
            "or rolled back (then it is evaluated again if the alias's model changed)")


def judge_canary(canary: dict[str, Any], stable: dict[str, Any], cfg: CanaryConfig,
                 age: timedelta, history: dict[str, Any] | None = None,
                 strata: Strata | None = None,
                 levels: HistoryLevels = DEFAULT_LEVELS) -> CanaryVerdict:
    """The verdict on health rows (storage/route_health.py) of the canary and the current
    target since the promotion. Either test can roll the canary back, so each gets half
    of `alpha` (Bonferroni): the chance of rolling back a canary within tolerance on both
    metrics stays at most `alpha`. A metric whose concurrent baseline is starved is compared
    with `history` (the current target's row before the promotion, judged as its
    `history_baseline`: exporter/canary_history.py) instead; a canary still undecided at
    `max_hours` is rolled back. `strata`: each client key's usual rate before the canary;
    each key's requests count at most its allowance (exporter/canary_strata.py; None: as
    sent).

    On the history the error test gets a second way to roll back: the canary found worse than
    the current target's concurrent traffic alone, starved or not (r14c MED 3: a history an
    app key poisoned before the canary, counted in full for a rollback, kept a bad canary at
    90% for 879 requests). Those are two chances to roll back a canary within tolerance, so
    each takes half of the error test's alpha (alpha / 4, Bonferroni again): the verdict's
    rollback risk stays at most `alpha`. The concurrent one only rolls back: a promotion
    still needs the history's bound. Nor is a canary rolled back on a history whose error rate
    the current target's own requests beside it make implausibly low (`history_too_low`).
    `levels`: how many of the history's unjudged failures a rollback counts and a promotion
    credits (exporter/canary_history.py `blamed`, `credit`), for bench/canary_history.py."""
    alpha = cfg.alpha / 2
    canary, stable = stratified(canary, stable, strata)
    thumbs = SprtParams(alpha, cfg.beta, cfg.tolerated_thumbs_down_increase,
                        cfg.bad_thumbs_down_increase)
    canary, stable = weighed(canary), weighed(stable)
    past = None if history is None else weighed(history)
    base = baseline_of(canary, stable, past, "trials", "failures", cfg.min_requests,
                       unjudged="opinions_missing", levels=levels)
    on_history = base.kind == "history"
    errors = SprtParams(alpha / 2 if on_history else alpha, cfg.beta,
                        cfg.tolerated_error_rate_increase, cfg.bad_error_rate_increase)
    votes = baseline_of(canary, stable, past, "votes", "down_votes", cfg.min_feedback)
    tests = [bounded_sprt("errors", canary["trials"], canary["failures"], base.trials,
                          base.events, base.unjudged, errors, base.kind, base.credited,
                          base.blamed if on_history else None),
             sprt("thumbs_down", canary.get("votes", 0), canary.get("down_votes", 0),
                  votes.trials, votes.events, thumbs, votes.kind)]
    too_low = history_too_low(stable, base, cfg.alpha)
    if too_low is not None and tests[0].decision == "worse":
        tests[0] = dataclasses.replace(tests[0], decision="continue", note=too_low)
    concurrent = (sprt("errors", canary["trials"], canary["failures"], stable["trials"],
                       stable["failures"], errors),) if on_history else ()
    held = [why for why in (_promotion_held(canary, base, errors),
                            history_doubt(stable, base, cfg.alpha)) if why is not None]
    expired = None
    if age >= timedelta(hours=cfg.max_hours):
        expired = (f"undecided after {age.total_seconds() / 3600:.1f} hours ([canary] "
                   f"max_hours {cfg.max_hours:g}): rolled back, the safe side")
    return canary_verdict(tests, feedback_counted=canary.get("votes", 0)
                          >= cfg.min_feedback, canary_requests=counted(canary),
                          min_requests=cfg.min_requests,
                          old_enough=age >= timedelta(minutes=cfg.min_age_minutes),
                          expired=expired, held="; ".join(held) or None,
                          rollback_only=concurrent)


def _promotion_held(canary: dict[str, Any], base: Baseline, params: SprtParams) -> str | None:
    """Why the canary is not promoted while some of its failures wait on a background second
    opinion that was skipped (the budget was full) or has not reported (r14 #2): those rows
    are unjudged, so for a rollback they count for nobody (an app key filling the budget must
    not roll a canary back), but a promotion must hold with every one of them counted as the
    canary's error, else a bad canary whose failures are the ones left unjudged looks healthy.
    Each client key's count at most as many as its own judged requests on the canary (weighed,
    `opinions_missing_weighed`): a key whose hang-ups are all skipped must not hold a clean
    canary (r14c #1); a key's bad canary rows beside its own judged ones still count. With
    strata they are weighed in them too (the keys new during the canary as one key: r14e MED
    4, exporter/canary_strata.py `missing_weighed`). A server without that field (an older
    one): every missing row counts."""
    missing = canary.get("opinions_missing_weighed", canary.get("opinions_missing", 0))
    if not missing:
        return None
    # against the baseline without its own unjudged failures: the bound a promotion needs
    worst = sprt("errors", canary["trials"] + missing, canary["failures"] + missing,
                 base.trials + base.credited, base.events + base.credited, params, base.kind)
    if worst.decision == "not_worse":
        return None
    return (f"no worse, but {missing:g} of its failures or hang-ups still wait on a background "
            f"second opinion (skipped: background_opinions_max or the key's share was full, or "
            "not reported yet; each key's at most its judged requests, the new keys' as one "
            "key's); "
            f"counted as its errors the canary would not pass ({worst.describe()})")


def _found_worse(verdict: CanaryVerdict, canary: dict[str, Any], cfg: CanaryConfig) -> bool:
    counted = canary.get("votes", 0) >= cfg.min_feedback
    return any(t.decision == "worse" for t in verdict.tests
               if t.metric != "thumbs_down" or counted)


def watch_step(ctx: StepContext) -> StepResult:
    alias, candidate = ctx.config.alias, ctx.state["fine_tuned_model"]
    cfg = ctx.config.canary
    # a re-opened canary's test goes on with its first window's evidence (a fresh start would
    # give a bad canary a second chance at being promoted); its max_hours counts from now
    opened = datetime.fromisoformat(ctx.state.get("evidence_since") or ctx.state["promoted_at"])
    closed = closed_gap(ctx.state)
    health = ctx.client.route_health(alias, since=opened.isoformat(),
                                     max_votes_per_voter=cfg.max_votes_per_voter,
                                     max_requests_per_user=cfg.max_requests_per_user,
                                     by_key=True,
                                     skip_since=closed and closed[0].isoformat(),
                                     skip_until=closed and closed[1].isoformat())
    spec = health.get("route") or {"targets": []}
    promotion = health.get("promotion") or {}
    if promotion.get("model") == candidate and (promotion.get("canary") or 0) >= 100:
        return promoted_by_hand(alias, candidate, promotion)
    if promotion.get("model") != candidate or \
            candidate not in [t["model"] for t in spec["targets"]]:
        return end("superseded", route=spec)
    rows = {row["target"]: row for row in health["targets"]}
    canary = rows.get(candidate, _NO_TRAFFIC)
    stable = rows.get(ctx.state["stable"], _NO_TRAFFIC)
    promoted_at, now = datetime.fromisoformat(ctx.state["promoted_at"]), ctx.now()
    age = now - promoted_at
    history, before = None, None
    if cfg.history_hours > 0 and len(keys_of(canary, stable)) > 1:
        before = _before(ctx, opened)
        # each key's requests count at most its usual rate before the canary (its allowance)
        history_s = history_seconds(before["targets"], opened, cfg.history_hours)
        canary, stable = stratified(canary, stable, strata_of(
            before["targets"], history_s, open_seconds(ctx.state, now)))
    if needs_history(canary, stable, cfg):
        before = before or _before(ctx, opened)
        # a server that did not judge it by the canary's rule (an older one): no history
        if before.get("history_baseline") is True:
            history = {row["target"]: row for row in before["targets"]}.get(ctx.state["stable"])
    verdict = judge_canary(canary, stable, cfg, age, history)
    detail = {"canary": _brief(canary), "stable": _brief(stable),
              "age_minutes": round(age.total_seconds() / 60, 2),
              "verdict": verdict.to_json()}
    if history is not None:
        detail["stable_before"] = _brief(history)
    seq = health.get("seq")  # the writes below refuse if the route moved since this read
    stuck = few_users_warning(canary, cfg, ctx.state.get("canary_percent", cfg.percent))
    if verdict.verdict == "rollback":
        try:
            # a route a person changed meanwhile keeps the change: the canary is taken out
            ctx.client.rollback(alias, verdict=verdict.to_json(), expect_seq=seq,
                                model=candidate)
        except Conflict as exc:
            return _held(alias, candidate, "rollback", exc, detail)
        # undecided at max_hours, never found worse: a later run on the same data may re-open
        # it once (exporter/cycle_unchanged.py)
        undecided = age >= timedelta(hours=cfg.max_hours) and not _found_worse(verdict, canary, cfg)
        return StepResult(None, state={"rolled_back_undecided": undecided,
                                       "open_s": open_seconds(ctx.state, now)},
                          detail={"reasons": list(verdict.reasons), **detail},
                          outcome="rolled_back",
                          note=rollback_note(candidate, verdict, undecided,
                                             reopened=bool(ctx.state.get("reopened_from")))
                          + (f"; {stuck}" if undecided and stuck else ""))
    if verdict.verdict == "promote":
        if health.get("changed_since_promotion"):
            return StepResult("watch", detail=detail, wait=True, blocked=True,
                              note=edited_note(alias, candidate))
        try:
            promoted = ctx.client.promote(alias, candidate, canary=100,
                                          verdict=verdict.to_json(), expect_seq=seq)
        except Conflict as exc:
            return _held(alias, candidate, "promotion", exc, detail)
        return dataclasses.replace(end("promoted", **detail),
                                   warnings=list(promoted.get("warnings") or []))
    note = f"the canary is undecided ({'; '.join(verdict.reasons)})"
    if stuck is not None:
        note += f"; {stuck}"
    if health.get("changed_since_promotion"):
        note += "; the route was edited by hand during it: the cycle will not promote it"
    return StepResult("watch", detail=detail, wait=True, note=note)


def open_seconds(state: dict[str, Any], now: datetime) -> float:
    """How long the canary has been open: since its promotion, plus its earlier windows' open
    time (`evidence_open_s`, their `open_s` at the rollback) when re-opened; never the time it
    was closed, which no key's allowance may count (r14l LOW 4). A run re-opened before runs
    recorded it: the time since its first window opened, as before."""
    this = (now - datetime.fromisoformat(state["promoted_at"])) / timedelta(seconds=1)
    first = state.get("evidence_since")
    if not first:
        return this
    earlier = state.get("evidence_open_s")
    if earlier is None:
        return (now - datetime.fromisoformat(first)) / timedelta(seconds=1)
    return float(earlier) + this


def closed_gap(state: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """A re-opened canary's closed time: from its first window's end (its start plus its
    `evidence_open_s`) to this promotion. Its rows (all the current target's) are no evidence
    beside the canary, so the health leaves them out (r14m LOW: they counted as the stable
    arm's, and each key's requests then as ones the canary's strata cut). None when not
    re-opened, or re-opened before runs recorded the open time."""
    first, earlier = state.get("evidence_since"), state.get("evidence_open_s")
    if not first or earlier is None:
        return None
    start = datetime.fromisoformat(first) + timedelta(seconds=float(earlier))
    end = datetime.fromisoformat(state["promoted_at"])
    return (start, end) if start < end else None


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    """A health row for the step's detail: its per-key counts (one entry per client key, so
    possibly many) as how many keys there were."""
    if "by_key" not in row:
        return row
    brief = {k: v for k, v in row.items() if k != "by_key"}
    return {**brief, "client_keys": len(row["by_key"])}


def _before(ctx: StepContext, opened: datetime) -> dict[str, Any]:
    """The alias's health in the `history_hours` before the canary, judged as its baseline,
    per client key too."""
    cfg = ctx.config.canary
    return ctx.client.route_health(
        ctx.config.alias, since=(opened - timedelta(hours=cfg.history_hours)).isoformat(),
        until=opened.isoformat(), max_votes_per_voter=cfg.max_votes_per_voter,
        max_requests_per_user=cfg.max_requests_per_user, history_baseline=True, by_key=True)


def promoted_by_hand(alias: str, model: str, promotion: dict[str, Any]) -> StepResult:
    """The canary's episode ends in a full promotion the watch did not make (a person's
    `tuneloop promote`): that settled it. The stable model gets no traffic any more, so the
    test could never decide and its `max_hours` would roll back the person's decision."""
    who, at = promotion.get("promoted_by") or "unknown", promotion.get("promoted_at")
    note = (f"the canary of {model} on {alias!r} was promoted fully by {who} at {at} "
            f"(#{promotion.get('promoted_seq')}): settled by hand, the watch ends")
    return StepResult(None, detail={"promoted_by": who, "promoted_at": at,
                                    "promoted_seq": promotion.get("promoted_seq"),
                                    "settled_by_hand": True},
                      outcome="promoted", note=note)


def edited_note(alias: str, model: str) -> str:
    """Why a canary found no worse is not promoted: a person changed the route during it."""
    return (f"the canary of {model} is found no worse, but route {alias!r} was edited by hand "
            f"during the canary: promoting it fully would override that edit, so the cycle "
            f"leaves it to a person. Settle it with `tuneloop promote --alias {quote(alias)} "
            f"--model {quote(model)}` (full) or `tuneloop rollback --alias {quote(alias)}` (takes "
            "the canary out, keeps the edit)")


def _held(alias: str, model: str, write: str, exc: Conflict, detail: dict[str, Any]
          ) -> StepResult:
    """The decision's write was refused: the route changed since it was read (decided again
    at the next look, never retried blindly) or needs a person."""
    again = " (decided again at the next look)" if exc.code == "route_changed" else ""
    return StepResult("watch", detail=detail, wait=True, blocked=True,
                      note=f"the {write} of the canary of {model} on {alias!r} was refused"
                           f"{again}: {exc.message}")


def rollback_note(model: str, verdict: CanaryVerdict, undecided: bool, reopened: bool) -> str:
    """What the run's output says about a rollback: why, and whether a later run opens the
    same model's canary again (exporter/cycle_unchanged.py `rejudged`)."""
    why = "; ".join(verdict.reasons)
    if not undecided:
        return (f"the canary of {model} was found worse ({why}): it stays rolled back; later "
                "runs on the same data and settings end `unchanged`")
    if reopened:
        return (f"the re-opened canary of {model} expired undecided again ({why}): it is NOT "
                "re-opened; later runs end `unchanged` until the data or the [evaluate]/"
                "[canary] settings change")
    return (f"the canary of {model} was rolled back undecided ({why}), never found worse: the "
            "next run on the same data and settings re-opens it once (no new job)")


def left_open(client: AdminClient, config: CycleConfig) -> dict[str, Any] | None:
    """The ended run of the cycle whose canary is open on the alias's route with nobody
    watching it (so its `max_hours` is not enforced either): its watch step kept failing
    (`failed`), or someone's promotion superseded it and a rollback of that promotion put it
    back (`superseded`). Found from the run's recorded state (`open_canary_run`: its candidate
    is the route's open canary), whatever the canary's share (up to 90%). A run settles it
    before anything new (exporter/cycle.py); None when there is none."""
    run = open_canary_run(client, config)
    if run is None:
        return None
    unwatched = run.get("status") == "failed" or run.get("outcome") == "superseded"
    return run if unwatched else None


def unwatched_warning(alias: str, run: dict[str, Any]) -> str:
    """What a run failing at `watch` says: its canary stays open until a run settles it."""
    state = run.get("state") or {}
    return (f"the canary of {state.get('fine_tuned_model')} on route {alias!r} stays open at "
            f"{state.get('canary_percent', '?')}% and is NOT watched (its max_hours is not "
            "enforced) until the next `tuneloop cycle` settles it first; to close it now: "
            f"`tuneloop routes rollback {alias}`")
