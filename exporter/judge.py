"""The `judge` scorer: a judge model compares the candidate's and the baseline's answer to each
validation example, through the proxy as evaluation traffic (tagged `eval-judge`), in both
orders (see `exporter.judge_prompt`).

A pair needs no judge when an answer failed or when both answers are the same (a tie). The
candidate's failed request where the baseline answered is a loss (`how: candidate_failed`): a
model that fails is worse, not excused (r14b #1). A failed baseline request makes the pair an
`error` (`baseline_failed`, `both_failed`): a baseline that failed is no evidence that the
candidate is better. A judge reply that is not the JSON verdict asked for is asked once
more; unparseable twice, or a judge request that failed after its retries (transient
failures are retried as any request), is a loss too (`how: judge_failed`, r14e #6): a pair
the judge could not judge is no evidence FOR the candidate, and a judge that refuses to
judge (a content filter's 400 on an unsafe answer, an answer too long for its context)
may be refusing the candidate's answer; left out, those pairs would leave the
sample and an unsafe candidate would pass.
An error counts neither as a win nor as a loss; the report counts them by kind, and the gate
refuses a run with too many errors and judge failures together (exporter/eval_gate.py).
Every judgement (each order's verdict, reason and interaction id) is kept in the report.

The statistics (`pairwise_summary`) count the split's groups, not pairs: copies of one prompt
and the turns of one session are one piece of evidence (exporter/eval_groups.py). A group
wins when its pairs have more wins than losses, loses when fewer, ties otherwise (one pair
per group: the pair's outcome). The candidate's win rate is over the judged groups with
ties as half a win, (wins + ties / 2) / (wins + losses + ties), so the margin 2 × win rate − 1
is (wins − losses) / judged groups: many ties dilute it. Its interval comes from the exact
Clopper-Pearson interval of p = P(candidate wins | the group is decided), i.e. the sign test
on the decided groups, scaled by the decided share: margin in (decided / judged) × (2p − 1).
That share is taken as fixed, which is exact for "above 0" (the sign test) and a little
optimistic for a `margin` above 0, so the gate then also asks an exact test that takes the
share as uncertain (exporter/margin_test.py, r14g #6).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import openai

from exporter.eval_cases import EvalCase, answer_text
from exporter.eval_groups import group_signs, renumber
from exporter.eval_report import Answer
from exporter.eval_retry import RetryPolicy, send
from exporter.intervals import clopper_pearson, sign_test
from exporter.judge_prompt import (
    DEFAULT_RUBRIC,
    ORDERS,
    Outcome,
    combine,
    judge_messages,
    parse_verdict,
    preferred,
    read_rubric,
)
from exporter.scoring import normalize_answer
from tuneloop.errors import ConfigError

ATTEMPTS = 2  # an unparseable verdict is asked for once more
JUDGE_MAX_TOKENS = 512


@dataclass(frozen=True)
class JudgeSpec:
    model: str
    rubric: str
    max_tokens: int = JUDGE_MAX_TOKENS


def load_rubric(path: Path | None) -> str:
    """The rubric in the user's file (UTF-8 text), or the default rubric without one."""
    if path is None:
        return DEFAULT_RUBRIC
    try:
        return read_rubric(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"rubric file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the rubric file {path}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None


def self_judging(judge_model: str | None, candidate: str, baseline: str) -> str | None:
    """A warning when the judge is one of the two models it compares: a model tends to
    prefer its own answers (self-preference), so its verdicts lean to that side."""
    if judge_model is None or judge_model not in (candidate, baseline):
        return None
    role = "candidate" if judge_model == candidate else "baseline"
    return (f"the judge model {judge_model} is also the {role}: a model tends to prefer its "
            f"own answers, so the verdicts may favour the {role}; use another judge model "
            "(--judge-model, [evaluate] judge_model)")


def rubric_digest(rubric: str) -> str:
    """The sha256 of a rubric's text: what a cycle compares to tell an edited rubric file."""
    return hashlib.sha256(rubric.encode()).hexdigest()


def configured_rubric_digest(evaluate: Mapping[str, Any]) -> str | None:
    """`rubric_digest` of the rubric an `[evaluate]` config (as JSON) names, read now; None
    for another scorer or a rubric that cannot be read."""
    if evaluate.get("scorer") != "judge":
        return None
    path = evaluate.get("rubric")
    try:
        return rubric_digest(load_rubric(Path(path) if isinstance(path, str) else None))
    except ConfigError:
        return None


def settled(candidate: Answer, baseline: Answer) -> tuple[Outcome | Literal["error"], str] | None:
    """The outcome of a pair that needs no judge, and why; None when it needs one."""
    if candidate.text is None and baseline.text is None:
        return "error", "both_failed"
    if candidate.text is None:
        return "baseline", "candidate_failed"  # a loss: the baseline answered, it did not
    if baseline.text is None:
        return "error", "baseline_failed"
    if normalize_answer(candidate.text) == normalize_answer(baseline.text):
        return "tie", "same_answer"
    return None


async def _one_order(client: openai.AsyncOpenAI, spec: JudgeSpec, case: EvalCase, order: str,
                     texts: Mapping[str, str], reference: str | None,
                     headers: dict[str, str], policy: RetryPolicy,
                     gate: asyncio.Semaphore) -> dict[str, Any]:
    first, second = (texts[role] for role in ORDERS[order])
    body: dict[str, Any] = {"model": spec.model, "temperature": 0, "max_tokens": spec.max_tokens,
            "messages": judge_messages(case.messages, first, second, spec.rubric, reference)}
    record: dict[str, Any] = {"order": order, "verdict": None, "prefers": None, "reason": None,
                              "error": None, "attempts": 0, "interaction_ids": []}
    api: Any = client.chat.completions
    for _ in range(ATTEMPTS):
        async with gate:
            reply = await send(lambda: api.with_raw_response.create(**body,
                                                                   extra_headers=headers),
                               policy)
        record["attempts"] += 1
        record["interaction_ids"].append(reply.interaction_id)
        if reply.raw is None:  # the request itself failed, after its own retries
            record["error"] = f"judge request failed: {reply.error}"
            return record
        choices = reply.raw.parse().model_dump().get("choices") or [{}]
        text = answer_text(choices[0].get("message") or {})
        parsed = parse_verdict(text)
        if parsed is not None:
            verdict, reason = parsed
            record.update(verdict=verdict, prefers=preferred(order, verdict), reason=reason,
                          error=None)
            return record
        record["error"] = f"unparseable judge output: {text[:200]!r}"
    return record


async def judge_pairs(client: openai.AsyncOpenAI, spec: JudgeSpec, cases: Sequence[EvalCase],
                      answers: Mapping[str, Sequence[Answer]], headers: dict[str, str],
                      policy: RetryPolicy, gate: asyncio.Semaphore) -> list[dict[str, Any]]:
    """One judgement per case, in order."""

    async def pair(i: int) -> dict[str, Any]:
        case = cases[i]
        candidate, baseline = answers["candidate"][i], answers["baseline"][i]
        reference = case.reference if case.edited else None
        judgement: dict[str, Any] = {"line": case.line, "source_id": case.source_id,
                                     "reference": reference is not None, "orders": []}
        done = settled(candidate, baseline)
        if done is not None:
            return {**judgement, "outcome": done[0], "how": done[1]}
        assert candidate.text is not None and baseline.text is not None
        texts = {"candidate": candidate.text, "baseline": baseline.text}
        own = {**headers, **({"x-tuneloop-source": case.source_id} if case.source_id else {})}
        orders = await asyncio.gather(*(
            _one_order(client, spec, case, order, texts, reference, own, policy, gate)
            for order in ORDERS))
        if any(o["error"] is not None for o in orders):  # a loss: no evidence for it
            return {**judgement, "outcome": "baseline", "how": "judge_failed", "orders": orders}
        outcome = combine([o["prefers"] for o in orders])
        return {**judgement, "outcome": outcome, "how": "judged", "orders": orders}

    return list(await asyncio.gather(*(pair(i) for i in range(len(cases)))))


ERROR_KINDS = ("baseline_failed", "both_failed")


def _outcome(judgement: Mapping[str, Any]) -> str:
    # a pair the judge could not judge is a loss, whatever an older record called it
    return "baseline" if judgement.get("how") == "judge_failed" else str(judgement["outcome"])


def _group_outcomes(outcomes: Sequence[str], groups: Sequence[int] | None
                    ) -> dict[str, int]:
    """Wins, losses and ties counted in groups (exporter/eval_groups.py): a group's outcome
    is the sign of its pairs' wins minus losses; a group of errors only is not judged."""
    group_of = np.asarray(groups if groups is not None else range(len(outcomes)),
                          dtype=np.int64)
    value = {"candidate": 1.0, "baseline": -1.0, "tie": 0.0}
    judged = np.array([o in value for o in outcomes], dtype=bool)
    if not judged.any():
        return {"wins": 0, "losses": 0, "ties": 0, "groups": int(np.unique(group_of).size)}
    scores = np.array([value[o] for o in outcomes if o in value])
    better, worse, count = group_signs(scores, renumber(group_of[judged]))
    return {"wins": better, "losses": worse, "ties": count - better - worse,
            "groups": int(np.unique(group_of).size)}


def pairwise_summary(judgements: Sequence[Mapping[str, Any]], confidence: float,
                     groups: Sequence[int] | None = None) -> dict[str, Any]:
    """Wins, losses (with the candidate's failed requests and the pairs the judge could not
    judge among them), ties and errors (by kind) of the candidate; the same counted in the
    split's groups (`groups`: each judgement's group; None: each its own), which the
    statistics use: the win rate over the judged groups with ties as half, and that rate's
    interval from the Clopper-Pearson interval of the decided groups (see the module doc);
    the sign test's p-value; the share of pairs with an error or a failed judgement
    (`failed`, for the gate's max_error_share)."""
    outcomes = [_outcome(j) for j in judgements]
    count = {k: outcomes.count(v)
             for k, v in (("wins", "candidate"), ("losses", "baseline"), ("ties", "tie"),
                          ("errors", "error"))}
    judge_failed = sum(j.get("how") == "judge_failed" for j in judgements)
    failed = count["errors"] + judge_failed
    unit = _group_outcomes(outcomes, groups)
    wins, losses = unit["wins"], unit["losses"]
    decided = wins + losses
    judged = decided + unit["ties"]
    share = decided / judged if judged else 0.0
    p_low, p_high = clopper_pearson(wins, decided, confidence)
    rate = (wins + unit["ties"] / 2) / judged if judged else 0.5
    return {**count, "decided": count["wins"] + count["losses"],
            "judged": count["wins"] + count["losses"] + count["ties"],
            "pairs": len(judgements),
            "groups": {"total": unit["groups"], "wins": wins, "losses": losses,
                       "ties": unit["ties"], "decided": decided, "judged": judged},
            "decided_groups": decided,
            "errors_by_kind": {kind: sum(j["outcome"] == "error" and j["how"] == kind
                                         for j in judgements) for kind in ERROR_KINDS},
            "candidate_failed": sum(j["how"] == "candidate_failed" for j in judgements),
            "judge_failed": judge_failed, "failed": failed,
            "error_share": failed / len(judgements) if judgements else 0.0,
            "win_rate": rate,
            "interval": [0.5 + share * (p_low - 0.5), 0.5 + share * (p_high - 0.5)],
            "decided_interval": [p_low, p_high],
            "p_value": sign_test(wins, losses),
            "method": "win rate over judged groups, ties as half; exact Clopper-Pearson "
                      "interval of the decided groups (sign test)",
            "orders_disagreed": sum(1 for j in judgements if j["how"] == "judged"
                                    and len({o["prefers"] for o in j["orders"]}) > 1)}
