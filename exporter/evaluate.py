"""Evaluate a candidate model against a baseline on an export's validation set.

Every example goes to both models through the tuneloop proxy with the official `openai` SDK,
marked `x-tuneloop-traffic: evaluation` (so it never mixes with production rows) and tagged
`eval:<run id>` and `eval-candidate` / `eval-baseline`. The candidate gets the request as
trained (the export's template stripped, a legacy separator and stop), the baseline the app's
request as sent (exporter.eval_cases; for a stripped export, the interaction's logged request
when it is the example's, exporter.eval_baseline): what each gets in production. At most
`concurrency` requests are in flight; 429, 5xx and connection failures are retried with
exponential backoff (honouring `retry-after`), other errors are recorded as the example's answer
failing; a model that could not be reached (`_check_reachable`) fails the evaluation instead
of being scored. With the `judge` scorer, a judge model then compares each pair of answers, in both
orders, through the proxy as well (tagged `eval-judge`; see exporter.judge). The run and its
report, judgements included, are stored through the admin API (`/admin/evals`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai

from exporter.eval_baseline import with_logged_requests
from exporter.eval_cases import (
    EvalCase,
    Markers,
    Stripped,
    load_cases,
    read_answer,
    request_for,
)
from exporter.eval_groups import dense_groups
from exporter.eval_report import (
    Answer,
    EvalReport,
    Scoring,
    Stats,
    build_report,
    make_scoring,
)
from exporter.eval_retry import NOT_FOUND, send
from exporter.exportdir import load_export
from exporter.intervals import CONFIDENCE, RESAMPLES, SEED
from exporter.judge import JudgeSpec, judge_pairs, pairwise_summary
from exporter.judge_prompt import DEFAULT_RUBRIC
from tuneloop.client import AdminClient
from tuneloop.errors import ConfigError, ModelUnreachable
from tuneloop.request_transforms import TargetTransforms

ROLES = ("candidate", "baseline")


@dataclass(frozen=True)
class EvalOptions:
    candidate: str
    baseline: str
    scorer: str = "exact"  # exact | exact_strict | module:function | classification | judge
    threshold: float = 0.5  # classification: predicted positive at or above it
    metric: str | None = None  # the number compared (default: mean score, f1, macro_f1)
    concurrency: int = 4
    retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0
    max_tokens: int | None = None
    limit: int | None = None  # evaluate the first N validation examples
    max_differences: int = 20
    cycle_run_id: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    judge_model: str | None = None  # the judge scorer's model (through the proxy)
    rubric: str = DEFAULT_RUBRIC  # what the judge looks for (the text of the user's file)
    confidence: float = CONFIDENCE  # of every interval
    resamples: int = RESAMPLES  # bootstrap resamples of the examples
    seed: int = SEED  # of the bootstrap
    comparisons: int = 1  # K > 1: the best of K candidates is chosen on these examples, so
    # each interval is at 1 - (1 - confidence) / K (Bonferroni)
    alias: str | None = None  # the alias evaluated: the baseline gets its transforms there
    repeated: int = 1  # R > 1: the R-th gate of this model on these examples (Bonferroni)


async def _ask(client: openai.AsyncOpenAI, model: str, case: EvalCase, markers: Markers,
               options: EvalOptions, headers: dict[str, str], wants_logprobs: bool,
               as_sent: bool, transforms: TargetTransforms | None) -> Answer:
    endpoint, body = request_for(case, model, markers, max_tokens=options.max_tokens,
                                 logprobs=wants_logprobs, as_sent=as_sent,
                                 transforms=transforms)
    api: Any = client.completions if endpoint == "completions" else client.chat.completions
    reply = await send(lambda: api.with_raw_response.create(**body, extra_headers=headers),
                       options)
    if reply.raw is None:
        return Answer(None, reply.error, reply.interaction_id, None, reply.retries,
                      unreachable=reply.unreachable)
    text, top = read_answer(endpoint, reply.raw.parse().model_dump(), markers)
    return Answer(text, None, reply.interaction_id, top, reply.retries)


@dataclass(frozen=True)
class _Asked:
    answers: dict[str, list[Answer]]
    judgements: list[dict[str, Any]] | None = None


async def _ask_all(base_url: str, api_key: str | None, run_id: str, cases: list[EvalCase],
                   markers: Markers, options: EvalOptions, scoring: Scoring,
                   baseline_transforms: TargetTransforms | None = None) -> _Asked:
    # With no key of our own, send none: the proxy then uses its own upstream key. The SDK
    # accepts an omitted Authorization only per request (in default_headers it raises a
    # TypeError, "Could not resolve authentication method").
    auth: dict[str, Any] = {} if api_key else {"Authorization": openai.Omit()}
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", max_retries=0,
                                timeout=options.timeout_s)
    gate = asyncio.Semaphore(max(1, options.concurrency))
    models = {"candidate": options.candidate, "baseline": options.baseline}

    async def one(role: str, case: EvalCase) -> Answer:
        headers = {**auth, **options.extra_headers, "x-tuneloop-traffic": "evaluation",
                   "x-tuneloop-tags": f"eval:{run_id},eval-{role}"}
        if case.source_id:  # so that forgetting the source's user reaches this copy too
            headers["x-tuneloop-source"] = case.source_id
        async with gate:
            return await _ask(client, models[role], case, markers, options, headers,
                              scoring.wants_logprobs, as_sent=role == "baseline",
                              transforms=baseline_transforms if role == "baseline" else None)

    try:
        answers = await asyncio.gather(*(one(role, case) for case in cases for role in ROLES))
        by_role = {role: list(answers[i::2]) for i, role in enumerate(ROLES)}
        _check_reachable(by_role, models)  # before paying a judge for it
        if not scoring.judged:
            return _Asked(by_role)
        assert options.judge_model is not None
        headers = {**auth, **options.extra_headers, "x-tuneloop-traffic": "evaluation",
                   "x-tuneloop-tags": f"eval:{run_id},eval-judge"}
        judgements = await judge_pairs(client, JudgeSpec(options.judge_model, options.rubric),
                                       cases, by_role, headers, options, gate)
        return _Asked(by_role, judgements)
    finally:
        await client.close()


def _stripped(client: AdminClient, manifest: Mapping[str, Any]) -> Stripped | None:
    """The template the export was stripped of: the baseline gets it back (the app's request)."""
    named = manifest.get("template")
    if not isinstance(named, Mapping) or not isinstance(named.get("ref"), str):
        return None
    return Stripped(client.prompt_template(named["ref"]), named.get("replacement_system_prompt"))


def _route_transforms(client: AdminClient, model: str,
                      alias: str | None = None) -> TargetTransforms | None:
    """The transforms `model` gets as a route target (the current model of an alias): where
    `alias` routes it when given, else the same wherever the routes name it; none when no
    route names it (the app's request as sent). An `alias` that does not route it while
    others give it transforms, or routes that give it different transforms with no alias to
    choose by, raise ConfigError: never a silent guess."""
    found: dict[str, list[tuple[Any, Any, Any]]] = {}
    for name, spec in client.routes().items():
        for target in [*spec.get("targets", []), *spec.get("fallbacks", [])]:
            if target.get("model") == model:
                found.setdefault(name, []).append((
                    target.get("transforms") or [], spec.get("prompt_suffix"), spec.get("stop")))
    plain: tuple[Any, Any, Any] = ([], None, None)  # no transforms: as sent
    if alias is not None and alias not in found and any(
            entry != plain for entries in found.values() for entry in entries):
        raise ConfigError(
            f"alias {alias!r} does not route the baseline {model}; "
            f"{', '.join(repr(name) for name in sorted(found))} "
            f"{'does' if len(found) == 1 else 'do'}: name the alias that routes it "
            "(`tuneloop evaluate --alias A`), so the baseline is asked as that route asks it")
    if alias is not None and alias in found:
        found = {alias: found[alias]}
    entries = [entry for name in sorted(found) for entry in found[name]]
    if not entries:
        return None
    if any(entry != entries[0] for entry in entries):
        where = ", ".join(sorted(found))
        raise ConfigError(
            f"the baseline {model} gets different transforms on {where}"
            + ("" if len(found) > 1 else " (as a target and as a fallback)")
            + ": name the alias evaluated (`tuneloop evaluate --alias A`; a cycle names "
            "its own) so the baseline is asked as that route asks it")
    transforms, separator, stop = entries[0]
    refs = {t["template"] for t in transforms if t.get("type") == "strip_template"}
    templates = {ref: client.prompt_template(ref) for ref in refs}
    return TargetTransforms.build(transforms, templates, separator, stop)


def _check_key(answers: Mapping[str, list[Answer]], api_key: str | None) -> None:
    """A request the proxy refused for its key (401/403) says nothing of the model: the whole
    evaluation stops with what to set, rather than score the refusals as wrong answers."""
    for role, rows in answers.items():
        refused = next((a.error for a in rows if a.error and a.error[:4] in ("401:", "403:")),
                       None)
        if refused is not None:
            given = "the key given" if api_key else "no key (the proxy's own upstream key)"
            raise ConfigError(
                f"the proxy refused the {role}'s evaluation requests with {given}: {refused}; "
                "give evaluate the key the proxy expects (OPENAI_API_KEY, or --api-key-env "
                "VAR; in a cycle, [evaluate] api_key_env)")


MAX_UNREACHABLE_SHARE = 0.1


def _check_reachable(answers: Mapping[str, list[Answer]], models: Mapping[str, str]) -> None:
    """A model that could not be reached (404: not served, e.g. a LoRA still deploying; 5xx
    or connection failures after the retries) on any request with a 404, or on more than
    MAX_UNREACHABLE_SHARE of them, fails the evaluation (ModelUnreachable) instead of being
    scored: those failures say nothing of its answers, and a verdict (`not_promoted`) would
    close the model for good. A cycle retries its step, then its next run evaluates the same
    model again. Fewer such failures, and a 400 (a content filter, a prompt too long), stay
    the candidate's wrong answers (exporter/eval_report.py)."""
    for role, rows in answers.items():
        down = [a for a in rows if a.unreachable]
        missing = [a for a in down if (a.error or "").startswith(f"{NOT_FOUND}:")]
        if missing or len(down) > MAX_UNREACHABLE_SHARE * len(rows):
            first = (missing or down)[0].error
            raise ModelUnreachable(
                f"the {role} {models[role]} could not be reached on {len(down)} of {len(rows)} "
                f"evaluation requests ({first}): not scored, no verdict recorded (an "
                "unreachable model says nothing of its quality); evaluate again once it is "
                "served (a cycle retries this step, then evaluates the same model again)",
                role=role, not_served=bool(missing))


def _unrouted(client: AdminClient, exc: ModelUnreachable, models: Mapping[str, str]
              ) -> ModelUnreachable:
    """`exc`, saying where the requests went when the model is no alias (the proxy sent them
    to its default upstream, which does not serve it) and what a model served elsewhere
    needs: a route to its server."""
    model = models.get(exc.role or "")
    if not exc.not_served or model is None or model in client.routes():
        return exc
    return ModelUnreachable(
        f"{exc.message}. {model} is not an alias, so the proxy sent its requests to its "
        "default upstream, which does not serve it: a model served elsewhere (Together, "
        "Fireworks, another server) needs a route to it, e.g. `tuneloop promote --alias NAME "
        f"--model {model} --base-url URL --api-key-env VAR` (or `tuneloop jobs serve JOB "
        f"--promote NAME`), then evaluate NAME as the {exc.role}", role=exc.role,
        not_served=True)


def evaluate(client: AdminClient, export_dir: Path, options: EvalOptions, *,
             api_key: str | None = None) -> EvalReport:
    """Run the export's validation set through both models via the proxy at `client.api`,
    score it, store the report, and return it."""
    export = load_export(export_dir)
    strip = _stripped(client, export.manifest)
    cases, markers = load_cases(export, options.limit, strip)
    cases, baseline_requests = with_logged_requests(cases, strip, client.interaction)
    scoring = make_scoring(options.scorer, options.threshold, options.metric, export.manifest)
    if scoring.judged and not options.judge_model:
        raise ConfigError("the judge scorer needs a judge model (--judge-model, or "
                          "[evaluate] judge_model)")
    baseline_transforms = _route_transforms(client, options.baseline, options.alias)
    run = client.create_eval_run(candidate=options.candidate, baseline=options.baseline,
                                 scorer=options.scorer, dataset=str(export_dir),
                                 threshold=options.threshold if scoring.classification else None,
                                 cycle_run_id=options.cycle_run_id)
    try:
        try:
            asked = asyncio.run(_ask_all(client.api + "/v1", api_key, run["id"], cases,
                                         markers, options, scoring, baseline_transforms))
        except ModelUnreachable as exc:
            raise _unrouted(client, exc, {"candidate": options.candidate,
                                          "baseline": options.baseline}) from None
        _check_key(asked.answers, api_key)
        stats = Stats(options.confidence, options.resamples, options.seed, options.comparisons,
                      options.repeated)
        pairwise = None
        if asked.judgements is not None:
            pairwise = {"judge": options.judge_model, "rubric": options.rubric,
                        **pairwise_summary(asked.judgements, stats.each,
                                           dense_groups([c.group for c in cases]).tolist())}
        report = build_report(run["id"], str(export_dir), cases, asked.answers,
                              {"candidate": options.candidate, "baseline": options.baseline},
                              scoring, options.max_differences, stats, pairwise,
                              asked.judgements)
        if baseline_requests is not None:
            report = replace(report, baseline_requests=baseline_requests.to_json())
        client.finish_eval_run(run["id"], status="done", report=report.to_json())
    except BaseException as exc:
        # never leave the run `running`: whatever failed, storing the report included
        with contextlib.suppress(Exception):  # the original error is what to show
            client.finish_eval_run(run["id"], status="failed",
                                   error=str(exc)[:1000] or repr(exc))
        raise
    return report
