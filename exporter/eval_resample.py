"""An evaluation's metrics on bootstrap resamples of its examples, vectorized over the
resamples (2,000 resamples of 1,000 examples take milliseconds), for the confidence intervals
of the report. A resample is given by weights: how many times each example was drawn (a
(resamples × n) matrix, `exporter.intervals.group_weight_blocks`: the split's groups are
drawn whole, so copies of one prompt are drawn together, never as independent examples).
Each `*_resampler` returns a function from such a weight matrix to each metric's value on
every resample; the metrics are defined exactly as in `exporter.scoring`. Pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from exporter.scoring import auprc, auroc

Resampler = Callable[[np.ndarray], dict[str, np.ndarray]]
_SLOW = {"auroc": auroc, "auprc": auprc}  # rank metrics: one call per resample


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(a.shape, dtype=float), where=b > 0)


def _total(weights: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per resample, the weighted count (or sum) of `flags`."""
    return weights @ flags.astype(float)


def mean_resampler(per_example: Sequence[float]) -> Resampler:
    scores = np.asarray(per_example, dtype=float)
    return lambda w: {"mean": _ratio(_total(w, scores), w.sum(axis=1).astype(float))}


def binary_resampler(truth: Sequence[bool], probabilities: Sequence[float], threshold: float,
                     metric: str) -> Resampler:
    """accuracy, precision, recall and F1 at `threshold`; AUROC or AUPRC only when `metric`
    names it (they are not vectorized)."""
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(probabilities, dtype=float)
    predicted = s >= threshold
    positions = np.arange(y.size)

    def at(w: np.ndarray) -> dict[str, np.ndarray]:
        tp, fp, fn = _total(w, y & predicted), _total(w, ~y & predicted), _total(w, y & ~predicted)
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        out = {"accuracy": _ratio(_total(w, y == predicted), w.sum(axis=1).astype(float)),
               "precision": precision, "recall": recall,
               "f1": _ratio(2 * precision * recall, precision + recall)}
        if metric in _SLOW:
            rows = (np.repeat(positions, row) for row in w)
            values = [_SLOW[metric](y[row].tolist(), s[row].tolist()) for row in rows]
            out[metric] = np.array([np.nan if v is None else v for v in values], dtype=float)
        return out

    return at


def multiclass_resampler(references: Sequence[str], predictions: Sequence[str]) -> Resampler:
    """accuracy and macro precision, recall and F1 (over the classes present in a resample)."""
    classes = sorted(set(references) | set(predictions))
    ref = np.asarray([classes.index(r) for r in references], dtype=np.int32)
    pred = np.asarray([classes.index(p) for p in predictions], dtype=np.int32)

    def at(w: np.ndarray) -> dict[str, np.ndarray]:
        sums = {"precision": np.zeros(len(w)), "recall": np.zeros(len(w)),
                "f1": np.zeros(len(w))}
        present = np.zeros(len(w))
        for c in range(len(classes)):
            is_ref, is_pred = ref == c, pred == c
            tp = _total(w, is_ref & is_pred)
            support = _total(w, is_ref)
            precision, recall = _ratio(tp, _total(w, is_pred)), _ratio(tp, support)
            f1 = _ratio(2 * precision * recall, precision + recall)
            here = support > 0
            present += here
            for name, value in (("precision", precision), ("recall", recall), ("f1", f1)):
                sums[name] += np.where(here, value, 0.0)
        out = {"accuracy": _ratio(_total(w, ref == pred), w.sum(axis=1).astype(float))}
        out.update({f"macro_{name}": _ratio(total, present) for name, total in sums.items()})
        return out

    return at
