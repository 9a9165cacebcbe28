"""Scoring an evaluation run: exact match, a user's function, and classification metrics
computed here at any threshold (the provider's were computed at 0.5 only).

All pure functions of predictions and references.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuneloop.errors import ConfigError, DatasetError

Scorer = Callable[[str, str], float]


def normalize_answer(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(prediction: str, reference: str, *, normalize: bool = True) -> float:
    """1.0 when equal (after collapsing whitespace and folding case, unless `normalize` is
    off), else 0.0."""
    if normalize:
        return float(normalize_answer(prediction) == normalize_answer(reference))
    return float(prediction == reference)


def load_scorer(spec: str) -> Scorer:
    """`exact_match`, `exact_match_strict`, or a user function given as `module:function`
    taking (prediction, reference) and returning a number or a bool."""
    if spec == "exact_match":
        return exact_match
    if spec == "exact_match_strict":
        return lambda p, r: exact_match(p, r, normalize=False)
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"a scorer is `exact_match` or `module:function`, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the scorer module {module_name!r}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{module_name} has no function {name!r}")

    def score(prediction: str, reference: str) -> float:
        value = function(prediction, reference)
        if isinstance(value, bool | int | float):
            try:
                number = float(value)
            except OverflowError:  # an int past float's range
                number = math.inf
            if math.isfinite(number):
                return number
        raise DatasetError(f"scorer {spec} returned {value!r}; it must return a number or "
                           "bool (finite: not NaN nor infinity)")

    return score


@dataclass(frozen=True)
class ScoreSummary:
    n: int
    mean: float | None
    scores: list[float]


def score_all(
    predictions: Sequence[str], references: Sequence[str], scorer: Scorer
) -> ScoreSummary:
    if len(predictions) != len(references):
        raise DatasetError(f"{len(predictions)} predictions for {len(references)} references")
    scores = [scorer(p, r) for p, r in zip(predictions, references, strict=True)]
    return ScoreSummary(len(scores), sum(scores) / len(scores) if scores else None, scores)


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _arrays(labels: Sequence[bool | int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(labels) != len(scores):
        raise DatasetError(f"{len(labels)} labels for {len(scores)} scores")
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if np.isnan(s).any():
        raise DatasetError("scores contain NaN")
    return y, s


def auroc(labels: Sequence[bool | int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count half); None with a single class."""
    y, s = _arrays(labels, scores)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_scores = s[order]
    start = 0
    for end in [*np.flatnonzero(np.diff(sorted_scores)).tolist(), len(s) - 1]:
        ranks[order[start : end + 1]] = (start + end) / 2 + 1  # average rank of a tie
        start = end + 1
    u = ranks[y].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def auprc(labels: Sequence[bool | int], scores: Sequence[float]) -> float | None:
    """Area under the precision-recall curve as average precision (a step function over the
    distinct scores, highest first); None without positives."""
    y, s = _arrays(labels, scores)
    if not y.any():
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    true_pos = np.cumsum(y)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_pos / predicted
    recall = true_pos / true_pos[-1]
    steps = np.diff(np.r_[0.0, recall])
    return float((steps * precision).sum())


@dataclass(frozen=True)
class BinaryMetrics:
    threshold: float
    n: int
    positives: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    auroc: float | None
    auprc: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def binary_metrics(
    labels: Sequence[bool | int], scores: Sequence[float], threshold: float = 0.5
) -> BinaryMetrics:
    """Metrics of a binary classifier whose score for the positive class is `scores`; an
    example is predicted positive when its score is at least `threshold`."""
    y, s = _arrays(labels, scores)
    predicted = s >= threshold
    tp = int((predicted & y).sum())
    fp = int((predicted & ~y).sum())
    fn = int((~predicted & y).sum())
    tn = int((~predicted & ~y).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return BinaryMetrics(
        threshold=threshold,
        n=len(y),
        positives=int(y.sum()),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=_ratio(tp + tn, len(y)),
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        auroc=auroc(labels, scores),
        auprc=auprc(labels, scores),
    )


def multiclass_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Accuracy, and per-class and macro-averaged precision, recall and F1."""
    if len(references) != len(predictions):
        raise DatasetError(f"{len(predictions)} predictions for {len(references)} references")
    classes = sorted(set(references) | set(predictions))
    per_class: dict[str, dict[str, float]] = {}
    for label in classes:
        tp = sum(1 for r, p in zip(references, predictions, strict=True) if r == p == label)
        predicted = sum(1 for p in predictions if p == label)
        support = sum(1 for r in references if r == label)
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    present = [per_class[c] for c in classes if per_class[c]["support"]]
    correct = sum(1 for r, p in zip(references, predictions, strict=True) if r == p)

    def macro(key: str) -> float:
        return sum(c[key] for c in present) / len(present) if present else 0.0

    return {
        "n": len(references),
        "accuracy": _ratio(correct, len(references)),
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "per_class": per_class,
    }


def positive_probability(
    top_logprobs: Mapping[str, float], positive: str, negative: str
) -> float | None:
    """P(positive) from a completion's first-token top logprobs, renormalized over the two
    label tokens (a token may carry the leading space); None when neither is among them."""

    def mass(label: str) -> float:
        return sum(math.exp(lp) for tok, lp in top_logprobs.items() if tok.strip() == label.strip())

    pos, neg = mass(positive), mass(negative)
    return pos / (pos + neg) if pos + neg > 0 else None
