"""Scoring an evaluation's answers and the report: per-model scores, the margin, and the
examples where the two models answered differently.

Scorers: `exact` (exact match after collapsing whitespace and case), `exact_strict`, a user
function `module:function` taking (prediction, reference), or `classification`: for a binary
task (the export names the positive class) precision, recall, F1, accuracy, AUROC and AUPRC
at the chosen threshold, using the positive class's probability from the first token's
logprobs when the model returns them, else the predicted label; for more classes, accuracy
and macro F1 (exporter/eval_scores.py). An example whose baseline request failed is left out
of every score, the margin and its test (a baseline that failed is no evidence that the
candidate is better, as with the judge); a candidate's failed request where the baseline
answered is the candidate's wrong answer (scored 0: a model that fails is worse, not excused);
`paired` counts failures on either side for the gate's max_error_share.
`judge`: a judge model compares the two answers (exporter.judge); the candidate's score is its
win rate over the decided pairs, the baseline's the rest.

Every score comes with a confidence interval (default 95%): a percentile bootstrap over the
examples (2,000 resamples, a fixed seed, the same resamples for both models, so the margin's
interval is a paired one); for the judge, the win rate's interval from the exact
Clopper-Pearson interval of the decided pairs (exporter.judge). Beside the bootstrap, `paired`
counts the discordant examples (the two models scored differently) and, for 0/1 scores, gives
the exact McNemar test (a sign test on the discordant examples) with the Clopper-Pearson
interval of P(candidate better | discordant). With `Stats.comparisons` = K (the best of K
checkpoints is chosen on these examples) every interval is at 1 - (1 - confidence) / K
(Bonferroni), and the report says so. The gate (exporter/eval_gate.py) reads
`margin_interval[0]`, the margin's lower bound, and these counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exporter.eval_cases import EvalCase
from exporter.eval_groups import (
    dense_groups,
    discordant_groups_text,
    group_signs,
    renumber,
    units_text,
)
from exporter.eval_scores import (  # noqa: F401  (Answer, Scoring, make_scoring: re-exported)
    Answer,
    Scoring,
    example_scores,
    make_scoring,
    score_answers,
)
from exporter.intervals import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    bonferroni,
    clopper_pearson,
    cluster_t_interval,
    group_weight_blocks,
    percentile,
    sign_test,
)
from exporter.scoring import normalize_answer
from tuneloop.errors import ConfigError, DatasetError

SCORES = ("mean", "win_rate", "accuracy", "precision", "recall", "f1", "auroc", "auprc",
          "macro_precision", "macro_recall", "macro_f1")


@dataclass(frozen=True)
class EvalReport:
    run_id: str
    dataset: str
    examples: int
    scorer: str
    metric: str
    threshold: float | None
    models: dict[str, dict[str, Any]]
    margin: float
    differences: list[dict[str, Any]]
    differences_total: int
    confidence: float = CONFIDENCE
    margin_interval: list[float] | None = None  # None: no examples
    intervals: dict[str, Any] | None = None  # how they were computed
    pairwise: dict[str, Any] | None = None  # the judge's wins, losses, ties, errors, test
    judgements: list[dict[str, Any]] | None = None
    paired: dict[str, Any] | None = None  # bootstrap: discordant examples, McNemar, failures
    baseline_requests: dict[str, int] | None = None  # stripped export: logged vs rebuilt
    groups: int | None = None  # the independent groups of the examples (exporter/eval_groups)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (a number that is not finite, an interval no resample had a
        value for, is null)."""
        return _finite({
            "run_id": self.run_id, "dataset": self.dataset, "examples": self.examples,
            "groups": self.groups,
            "scorer": self.scorer, "metric": self.metric, "threshold": self.threshold,
            "models": self.models, "margin": self.margin,
            "confidence": self.confidence, "margin_interval": self.margin_interval,
            "intervals": self.intervals, "pairwise": self.pairwise,
            "paired": self.paired, "baseline_requests": self.baseline_requests,
            "judgements": self.judgements,
            "differences": self.differences, "differences_total": self.differences_total})

    @property
    def margin_lower(self) -> float | None:
        return self.margin_interval[0] if self.margin_interval else None

    def render(self, shown: int = 5) -> str:
        threshold = f" at threshold {self.threshold:g}" if self.threshold is not None else ""
        how = (self.intervals or {}).get("method", "")
        groups = f" in {self.groups} independent groups" if self.groups is not None else ""
        lines = [f"evaluation {self.run_id} on {self.dataset}: {self.examples} validation "
                 f"examples{groups}, scorer {self.scorer}, {self.metric}{threshold}; "
                 f"{self.confidence * 100:.4g}% intervals{': ' + how if how else ''}"]
        family = (self.intervals or {}).get("family_confidence", self.confidence)
        comparisons = (self.intervals or {}).get("comparisons", 1)
        repeated = (self.intervals or {}).get("repeated", 1)
        if repeated > 1:
            lines.append(f"  repeated test: gate number {repeated} of this model on these "
                         f"examples (it was not promoted before; the gate's settings changed "
                         f"since), so each interval is at Bonferroni's level for "
                         f"{repeated * comparisons} tests: {self.confidence * 100:.4g}%")
        elif comparisons > 1:
            lines.append(f"  Bonferroni: the best of {comparisons} checkpoints is chosen on "
                         f"these examples, so each interval is at 1 - "
                         f"{1 - family:.4g}/{comparisons} = "
                         f"{self.confidence * 100:.4g}%")
        if self.baseline_requests and self.baseline_requests.get("rebuilt"):
            lines.append(f"  baseline asked the app's logged request for "
                         f"{self.baseline_requests['logged']} examples; "
                         f"{self.baseline_requests['rebuilt']} rebuilt from the template")
        width = max(len(m["model"]) for m in self.models.values())
        for role, model in self.models.items():
            lines.append(f"  {role:<9} {model['model']:<{width}}  {model['score']:.4f} "
                         f"{_interval(model.get('interval'))}  ({model['errors']} failed "
                         f"requests, {model['retries']} retries)")
            others = [f"{name} {value:.4f} {_interval(model.get('intervals', {}).get(name))}"
                      .rstrip() for name in SCORES
                      if name != self.metric
                      and isinstance(value := model["metrics"].get(name), int | float)]
            if others:
                lines.append(f"  {'':<9} " + ", ".join(others))
        lines.append(f"  margin    {self.margin:+.4f} {_interval(self.margin_interval, '+')} "
                     "(candidate - baseline)")
        if self.pairwise is not None:
            p = self.pairwise
            kinds = ", ".join(f"{k} {v}" for k, v in p.get("errors_by_kind", {}).items() if v)
            why = [f"{p[k]} of them {what}" for k, what in (
                ("candidate_failed", "failed requests"),
                ("judge_failed", "pairs the judge could not judge")) if p.get(k)]
            lost = f" ({', '.join(why)})" if why else ""
            lines.append(f"  judge     {p['judge']}: {p['wins']} wins, {p['losses']} losses"
                         f"{lost}, {p['ties']} ties, {p['errors']} errors"
                         f"{f' ({kinds})' if kinds else ''}"
                         f"; win rate {p['win_rate']:.4f} {_interval(p['interval'])} over "
                         f"{units_text(p, 'judged')}, ties as half "
                         f"(exact Clopper-Pearson on {units_text(p, 'decided')}), sign test "
                         f"p = {p['p_value']:.4g}; the two orders disagreed on "
                         f"{p['orders_disagreed']} pairs")
        if self.paired is not None:
            q = self.paired
            exact = (f"; exact McNemar p = {q['p_value']:.4g}, P(candidate better | discordant) "
                     f"{_interval(q['interval'])}" if q.get("p_value") is not None else "")
            lines.append(f"  paired    {q['discordant']} discordant examples (candidate better "
                         f"on {q['candidate_better']}, baseline on {q['baseline_better']})"
                         f"{discordant_groups_text(q)}{exact}")
            if q.get("failed"):
                lines.append(f"  failed    {q['failed']} of {self.examples} examples have a "
                             f"failed request (either side); the candidate's "
                             f"{q.get('candidate_failed', 0)} count as wrong answers, the "
                             f"{q.get('left_out', q['failed'])} the baseline failed are left "
                             f"out (no evidence either way); scored on "
                             f"{q.get('compared', self.examples - q['failed'])}")
        if self.differences_total and shown > 0:
            lines.append(f"  {self.differences_total} examples answered differently; "
                         f"the first {min(shown, len(self.differences))}:")
        for diff in self.differences[:shown]:
            lines.append(f"  - line {diff['line']}: reference {_short(diff['reference'])}")
            for role in self.models:
                answer = diff[role]
                text = answer["answer"] if answer["error"] is None else f"[{answer['error']}]"
                lines.append(f"      {role}: {_short(text)} (score {answer['score']:g})")
            if diff.get("judgement"):
                lines.append(f"      judge: {diff['judgement']}: {_short(diff.get('reason'))}")
        return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _interval(bounds: Sequence[float | None] | None, sign: str = "") -> str:
    if not bounds or any(b is None or b != b for b in bounds):  # none, or NaN
        return ""
    return f"[{bounds[0]:{sign}.4f}, {bounds[1]:{sign}.4f}]"


def _short(text: str | None, limit: int = 100) -> str:
    text = " ".join((text or "").split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


@dataclass(frozen=True)
class Stats:
    """How intervals are computed: the confidence, and the bootstrap's resamples and seed."""

    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED
    comparisons: int = 1  # K: the best of K candidates is chosen on the same examples
    repeated: int = 1  # R: the R-th gate of one model on these examples (exporter/cycle_steps)

    @property
    def each(self) -> float:
        """Each interval's confidence: Bonferroni over the comparisons and repeated tests."""
        return bonferroni(self.confidence, self.comparisons * self.repeated)


def _answered(answers: Mapping[str, Sequence[Answer]]) -> list[int]:
    """The examples the baseline answered: the evidence. The candidate's failed request there
    is its wrong answer (scored 0: a model that fails in production is worse, r14b #1); a
    failed baseline request says nothing of which model is better, so that pair is left out."""
    return [i for i, answer in enumerate(answers["baseline"]) if answer.text is not None]


def _paired(scored: Mapping[str, Sequence[float]], group_of: np.ndarray, examples: int,
            scoring: Scoring, confidence: float, failed: int,
            candidate_failed: int) -> dict[str, Any]:
    """Over the `scored` pairs (the baseline answered, out of `examples`; `group_of`: their
    split groups, 0..G-1): the discordant examples, and the discordant groups (a group's
    outcome is the mean of its differences: copies of one prompt are one piece of evidence);
    for 0/1 scores of a mean or accuracy, the exact McNemar test over the groups and the
    Clopper-Pearson interval of P(candidate better | discordant group); the examples with a
    failed request on either side (`failed`, for max_error_share), the candidate's failures
    (scored as wrong answers) and the pairs left out for the baseline's."""
    pairs = list(zip(scored["candidate"], scored["baseline"], strict=True))
    better = sum(c > b for c, b in pairs)
    worse = sum(c < b for c, b in pairs)
    differences = np.array([c - b for c, b in pairs], dtype=float)
    groups_better, groups_worse, groups = group_signs(differences, group_of)
    binary = scoring.metric in ("mean", "accuracy") and all(v in (0.0, 1.0) for p in pairs
                                                             for v in p)
    out: dict[str, Any] = {"compared": len(pairs), "discordant": better + worse,
                           "candidate_better": better, "baseline_better": worse,
                           "groups": groups, "discordant_groups": groups_better + groups_worse,
                           "groups_better": groups_better, "groups_worse": groups_worse,
                           "failed": failed, "left_out": examples - len(pairs),
                           "candidate_failed": candidate_failed,
                           "error_share": failed / examples if examples else 0.0,
                           "p_value": None, "interval": None}
    if binary and pairs:
        out["p_value"] = sign_test(groups_better, groups_worse)
        out["interval"] = list(clopper_pearson(groups_better, groups_better + groups_worse,
                                               confidence))
    return out


def _bootstrap(scoring: Scoring, cases: Sequence[EvalCase],
               answers: Mapping[str, Sequence[Answer]], models: Mapping[str, str],
               stats: Stats) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]],
                                      list[float] | None, dict[str, Any]]:
    """Each model's summary with its intervals, its per-example scores (for showing), the
    margin's interval, and the paired counts. Scores, intervals and the test are over the
    examples the baseline answered (the candidate's failures there scored as wrong answers);
    the others are left out; failures on either side are counted (max_error_share). The
    bootstrap draws the split's groups whole; a mean's margin has the cluster t-interval."""
    kept = _answered(answers)
    group_of = renumber(dense_groups([c.group for c in cases])[kept])
    kept_cases = [cases[i] for i in kept]
    kept_answers = {role: [answers[role][i] for i in kept] for role in models}
    scores = {role: score_answers(scoring, kept_cases, kept_answers[role]) for role in models
              } if kept else {}
    parts: dict[str, list[dict[str, np.ndarray]]] = {role: [] for role in models}
    for block in group_weight_blocks(group_of if scores else group_of[:0], stats.resamples,
                                     stats.seed):
        for role in models:
            parts[role].append(scores[role][3](block))
    sampled = {role: {name: np.concatenate([p[name] for p in parts[role]])
                      for name in (parts[role][0] if parts[role] else {})}
               for role in models}
    summary: dict[str, dict[str, Any]] = {}
    for role, model in models.items():
        value, metrics = (scores[role][0], scores[role][1]) if scores else (0.0, {"n": 0})
        intervals = {name: list(percentile(values, stats.each))
                     for name, values in sampled[role].items()}
        summary[role] = {"model": model, "score": value,
                         "interval": intervals.get(scoring.metric), "intervals": intervals,
                         "metrics": metrics,
                         "errors": sum(a.text is None for a in answers[role]),
                         "retries": sum(a.retries for a in answers[role])}
    margin_interval = None
    if scoring.metric == "mean" and scores:
        differences = np.asarray(scores["candidate"][2]) - np.asarray(scores["baseline"][2])
        margin_interval = list(cluster_t_interval(differences, group_of, stats.each))
    elif scoring.metric in sampled.get("candidate", {}):
        margin_interval = list(percentile(sampled["candidate"][scoring.metric]
                                          - sampled["baseline"][scoring.metric],
                                          stats.each))
    failed = sum(any(answers[role][i].text is None for role in models)
                 for i in range(len(cases)))
    candidate_failed = sum(a.text is None for a in answers["candidate"])
    paired = _paired({role: scores[role][2] if scores else [] for role in models}, group_of,
                     len(cases), scoring, stats.each, failed, candidate_failed)
    left_out = sorted(set(range(len(cases))) - set(kept))
    shown = {role: [0.0] * len(cases) for role in models}
    for role in models:  # where both answered, the same numbers as decided on
        for i, score in zip(kept, scores[role][2] if scores else [], strict=True):
            shown[role][i] = score
        for i, score in zip(left_out, example_scores(
                scoring, [cases[i] for i in left_out],
                [answers[role][i] for i in left_out]), strict=True):
            shown[role][i] = score
    return summary, shown, margin_interval, paired


def _judged(pairwise: Mapping[str, Any], judgements: Sequence[Mapping[str, Any]],
            answers: Mapping[str, Sequence[Answer]], models: Mapping[str, str]
            ) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]], list[float]]:
    """The judge's outcome as scores: the candidate's win rate, the baseline's loss rate;
    per example 1 for a win, 0.5 for a tie or an error, 0 for a loss."""
    low, high = pairwise["interval"]
    rate = pairwise["win_rate"]
    bounds = {"candidate": (rate, [low, high]), "baseline": (1 - rate, [1 - high, 1 - low])}
    summary = {role: {"model": model, "score": bounds[role][0], "interval": bounds[role][1],
                      "intervals": {"win_rate": bounds[role][1]},
                      "metrics": {"win_rate": bounds[role][0], "n": len(judgements)},
                      "errors": sum(a.text is None for a in answers[role]),
                      "retries": sum(a.retries for a in answers[role])}
               for role, model in models.items()}
    scored = {role: [1.0 if j["outcome"] == role else 0.0
                     if j["outcome"] in ("candidate", "baseline") else 0.5 for j in judgements]
              for role in models}
    return summary, scored, [2 * low - 1, 2 * high - 1]


def build_report(run_id: str, dataset: str, cases: Sequence[EvalCase],
                 answers: Mapping[str, Sequence[Answer]], models: Mapping[str, str],
                 scoring: Scoring, max_differences: int, stats: Stats = Stats(),
                 pairwise: Mapping[str, Any] | None = None,
                 judgements: Sequence[dict[str, Any]] | None = None) -> EvalReport:
    if not cases:
        raise DatasetError("the validation set has no examples: there is nothing to compare "
                           "(export with a validation fraction above 0)")
    margin_interval: list[float] | None
    paired = None
    if scoring.judged:
        if pairwise is None or judgements is None:
            raise ConfigError("the judge scorer needs the judgements")
        summary, scored, margin_interval = _judged(pairwise, judgements, answers, models)
        method = ("win rate over judged pairs, ties as half; exact Clopper-Pearson interval of "
                  "the decided pairs, sign test")
    else:
        summary, scored, margin_interval, paired = _bootstrap(scoring, cases, answers, models,
                                                              stats)
        method = f"bootstrap, {stats.resamples} resamples, seed {stats.seed}"
        if scoring.metric == "mean":
            method += "; margin: t-interval over the groups"
    differing = []
    for i in range(len(cases)):
        texts = [answers[role][i].text for role in models]
        if len({normalize_answer(t) if t is not None else None for t in texts}) > 1:
            differing.append(i)
    differing.sort(key=lambda i: len({scored[r][i] for r in models}) == 1)  # scores differ first
    differences = [
        {"line": cases[i].line, "source_id": cases[i].source_id,  # forget finds it by this
         "prompt": cases[i].prompt[-300:],
         "reference": cases[i].reference,
         **{role: {"answer": answers[role][i].text, "error": answers[role][i].error,
                   "score": scored[role][i], "interaction_id": answers[role][i].interaction_id}
            for role in models},
         **(_judgement_note(judgements[i]) if judgements is not None else {})}
        for i in differing[:max_differences]
    ]
    margin = summary["candidate"]["score"] - summary["baseline"]["score"]
    return EvalReport(run_id, dataset, len(cases), scoring.name, scoring.metric,
                      scoring.threshold if scoring.classification else None, summary, margin,
                      differences, len(differing), stats.each, margin_interval,
                      {"method": method, "confidence": stats.each,
                       "family_confidence": stats.confidence,
                       "comparisons": stats.comparisons, "repeated": stats.repeated,
                       "resamples": stats.resamples, "seed": stats.seed},
                      dict(pairwise) if pairwise is not None else None,
                      list(judgements) if judgements is not None else None, paired,
                      groups=int(np.unique(dense_groups([c.group for c in cases])).size))


def _judgement_note(judgement: Mapping[str, Any]) -> dict[str, Any]:
    reasons = [f"{o['order']}: {o['reason'] if o['error'] is None else o['error']}"
               for o in judgement.get("orders", [])]
    return {"judgement": judgement["outcome"],
            "reason": "; ".join(reasons) if reasons else judgement.get("how")}
