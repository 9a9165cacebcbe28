"""Scoring an evaluation's answers: the scorers (`exact`, `exact_strict`, a user function
`module:function`, `classification`, `judge`), each model's metrics over a set of examples,
and a 0..1 score per example.

Only examples the baseline answered are scored for the comparison (exporter.eval_report
leaves the others out: a failed baseline request is no evidence either way); there, the
candidate's failed request scores as a wrong answer (0; for classification, the wrong label),
and `example_scores` gives a failed answer 0 for the report's list of differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.eval_cases import EvalCase
from exporter.eval_resample import (
    Resampler,
    binary_resampler,
    mean_resampler,
    multiclass_resampler,
)
from exporter.scoring import (
    Scorer,
    binary_metrics,
    load_scorer,
    multiclass_metrics,
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
    unreachable: bool = False  # the request never reached the model (exporter/eval_retry.py)


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
        return self.scorer is None and not self.judged

    @property
    def judged(self) -> bool:
        return self.name == "judge"

    @property
    def wants_logprobs(self) -> bool:
        return self.positive is not None


def make_scoring(spec: str, threshold: float, metric: str | None,
                 manifest: Mapping[str, Any]) -> Scoring:
    if spec == "judge":
        if metric not in (None, "win_rate"):
            raise ConfigError(f"the judge scorer's metric is win_rate, not {metric!r}")
        return Scoring(spec, "win_rate", threshold)
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


def _score_binary(scoring: Scoring, cases: Sequence[EvalCase], answers: Sequence[Answer]
                  ) -> tuple[dict[str, Any], list[float], Resampler]:
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
    return metrics, per_example, binary_resampler(truth, probabilities, scoring.threshold,
                                                  scoring.metric)


def score_answers(scoring: Scoring, cases: Sequence[EvalCase], answers: Sequence[Answer]
                  ) -> tuple[float, dict[str, Any], list[float], Resampler]:
    """(the compared number, every metric, a 0..1 score per example, the metrics on
    resamples)."""
    if scoring.scorer is not None:
        scorer = scoring.scorer
        per_example = [0.0 if a.text is None else scorer(a.text, c.reference)
                       for c, a in zip(cases, answers, strict=True)]
        mean = sum(per_example) / len(per_example) if per_example else 0.0
        metrics: dict[str, Any] = {"mean": mean, "n": len(per_example)}
        resampler = mean_resampler(per_example)
    elif scoring.positive is not None:
        metrics, per_example, resampler = _score_binary(scoring, cases, answers)
    else:
        predictions = [a.text or "" for a in answers]
        references = [c.reference for c in cases]
        metrics = multiclass_metrics(references, predictions)
        per_example = [float(p == c.reference) for p, c in zip(predictions, cases, strict=True)]
        resampler = multiclass_resampler(references, predictions)
    value = metrics.get(scoring.metric)
    if not isinstance(value, int | float):
        known = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
        raise ConfigError(f"metric {scoring.metric!r} is not one of {known}")
    return float(value), metrics, per_example, resampler




def example_scores(scoring: Scoring, cases: Sequence[EvalCase], answers: Sequence[Answer]
                   ) -> list[float]:
    """A 0..1 score per example, a failed answer 0 (for showing examples, not for deciding)."""
    if scoring.scorer is not None:
        return [0.0 if a.text is None else scoring.scorer(a.text, c.reference)
                for c, a in zip(cases, answers, strict=True)]
    if scoring.positive is not None:
        return _score_binary(scoring, cases, answers)[1] if cases else []
    return [float(a.text is not None and a.text == c.reference)
            for c, a in zip(cases, answers, strict=True)]
