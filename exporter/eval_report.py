"""Scoring an evaluation's answers and the report: per-model scores, the margin, and the
examples where the two models answered differently.

Scorers: `exact` (exact match after collapsing whitespace and case), `exact_strict`, a user
function `module:function` taking (prediction, reference), or `classification`: for a binary
task (the export names the positive class) precision, recall, F1, accuracy, AUROC and AUPRC
at the chosen threshold, using the positive class's probability from the first token's
logprobs when the model returns them, else the predicted label; for more classes, accuracy
and macro F1. A failed request counts as a wrong answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.eval_cases import EvalCase
from exporter.scoring import (
    Scorer,
    binary_metrics,
    load_scorer,
    multiclass_metrics,
    normalize_answer,
    positive_probability,
)
from tuneloop.errors import ConfigError


@dataclass(frozen=True)
class Answer:
    text: str | None  # None: the request failed
    error: str | None
    interaction_id: str | None
    top_logprobs: Mapping[str, float] | None = None
    retries: int = 0


@dataclass(frozen=True)
class Scoring:
    name: str
    metric: str
    threshold: float
    scorer: Scorer | None = None
    positive: str | None = None
    negative: str | None = None

    @property
    def classification(self) -> bool:
        return self.scorer is None

    @property
    def wants_logprobs(self) -> bool:
        return self.positive is not None


def make_scoring(spec: str, threshold: float, metric: str | None,
                 manifest: Mapping[str, Any]) -> Scoring:
    if spec != "classification":
        name = {"exact": "exact_match", "exact_strict": "exact_match_strict"}.get(spec, spec)
        return Scoring(spec, metric or "mean", threshold, scorer=load_scorer(name))
    summary = manifest.get("classification") or {}
    labels = list(summary.get("labels") or {})
    positive = summary.get("positive_class")
    if len(labels) == 2 and positive in labels:
        negative = next(label for label in labels if label != positive)
        return Scoring(spec, metric or "f1", threshold, positive=positive, negative=negative)
    if len(labels) == 2:
        raise ConfigError("binary classification needs the positive class: export with one")
    return Scoring(spec, metric or "macro_f1", threshold)


def _score_binary(scoring: Scoring, cases: Sequence[EvalCase],
                  answers: Sequence[Answer]) -> tuple[dict[str, Any], list[float]]:
    assert scoring.positive is not None and scoring.negative is not None
    truth = [c.reference == scoring.positive for c in cases]
    probabilities: list[float] = []
    for actual, answer in zip(truth, answers, strict=True):
        if answer.text is None:  # a failure is a wrong answer
            probabilities.append(0.0 if actual else 1.0)
            continue
        p = positive_probability(answer.top_logprobs, scoring.positive, scoring.negative) \
            if answer.top_logprobs else None
        probabilities.append(p if p is not None else float(answer.text == scoring.positive))
    metrics = binary_metrics(truth, probabilities, scoring.threshold).to_json()
    per_example = [float((p >= scoring.threshold) == t)
                   for p, t in zip(probabilities, truth, strict=True)]
    return metrics, per_example


def score_answers(scoring: Scoring, cases: Sequence[EvalCase],
                  answers: Sequence[Answer]) -> tuple[float, dict[str, Any], list[float]]:
    """(the compared number, every metric, a 0..1 score per example)."""
    if scoring.scorer is not None:
        scorer = scoring.scorer
        per_example = [0.0 if a.text is None else scorer(a.text, c.reference)
                       for c, a in zip(cases, answers, strict=True)]
        mean = sum(per_example) / len(per_example) if per_example else 0.0
        metrics: dict[str, Any] = {"mean": mean, "n": len(per_example)}
    elif scoring.positive is not None:
        metrics, per_example = _score_binary(scoring, cases, answers)
    else:
        predictions = [a.text or "" for a in answers]
        metrics = multiclass_metrics([c.reference for c in cases], predictions)
        per_example = [float(p == c.reference) for p, c in zip(predictions, cases, strict=True)]
    value = metrics.get(scoring.metric)
    if not isinstance(value, int | float):
        known = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
        raise ConfigError(f"metric {scoring.metric!r} is not one of {known}")
    return float(value), metrics, per_example


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

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dataset": self.dataset, "examples": self.examples,
                "scorer": self.scorer, "metric": self.metric, "threshold": self.threshold,
                "models": self.models, "margin": self.margin,
                "differences": self.differences, "differences_total": self.differences_total}

    def render(self, shown: int = 5) -> str:
        threshold = f" at threshold {self.threshold:g}" if self.threshold is not None else ""
        lines = [f"evaluation {self.run_id} on {self.dataset}: {self.examples} validation "
                 f"examples, scorer {self.scorer}, {self.metric}{threshold}"]
        width = max(len(m["model"]) for m in self.models.values())
        for role, model in self.models.items():
            lines.append(f"  {role:<9} {model['model']:<{width}}  {model['score']:.4f}  "
                         f"({model['errors']} failed requests, {model['retries']} retries)")
        lines.append(f"  margin    {self.margin:+.4f} (candidate - baseline)")
        if self.differences_total:
            lines.append(f"  {self.differences_total} examples answered differently; "
                         f"the first {min(shown, len(self.differences))}:")
        for diff in self.differences[:shown]:
            lines.append(f"  - line {diff['line']}: reference {_short(diff['reference'])}")
            for role in self.models:
                answer = diff[role]
                text = answer["answer"] if answer["error"] is None else f"[{answer['error']}]"
                lines.append(f"      {role}: {_short(text)} (score {answer['score']:g})")
        return "\n".join(lines)


def _short(text: str | None, limit: int = 100) -> str:
    text = " ".join((text or "").split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def build_report(run_id: str, dataset: str, cases: Sequence[EvalCase],
                 answers: Mapping[str, Sequence[Answer]], models: Mapping[str, str],
                 scoring: Scoring, max_differences: int) -> EvalReport:
    scored: dict[str, list[float]] = {}
    summary: dict[str, dict[str, Any]] = {}
    for role, model in models.items():
        value, metrics, per_example = score_answers(scoring, cases, answers[role])
        scored[role] = per_example
        summary[role] = {"model": model, "score": value, "metrics": metrics,
                         "errors": sum(a.text is None for a in answers[role]),
                         "retries": sum(a.retries for a in answers[role])}
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
            for role in models}}
        for i in differing[:max_differences]
    ]
    margin = summary["candidate"]["score"] - summary["baseline"]["score"]
    return EvalReport(run_id, dataset, len(cases), scoring.name, scoring.metric,
                      scoring.threshold if scoring.classification else None, summary, margin,
                      differences, len(differing))
