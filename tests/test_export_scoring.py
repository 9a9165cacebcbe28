"""Scoring against hand-computed values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from exporter.scoring import (
    auprc,
    auroc,
    binary_metrics,
    exact_match,
    load_scorer,
    multiclass_metrics,
    positive_probability,
    score_all,
)
from tuneloop.errors import ConfigError, DatasetError

LABELS = [1, 0, 1, 1, 0, 0]
SCORES = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]


def test_binary_metrics_at_the_default_threshold() -> None:
    m = binary_metrics(LABELS, SCORES)
    # predicted positive: 0.9 (1), 0.8 (0), 0.7 (1) -> tp 2, fp 1, fn 1 (0.4), tn 2
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 1, 2)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    # positives 0.9, 0.7, 0.4 beat 3 + 2 + 2 of the 9 negatives
    assert m.auroc == pytest.approx(7 / 9)
    # precision at each positive, highest first: 1/1, 2/3, 3/4; each adds 1/3 recall
    assert m.auprc == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_binary_metrics_at_another_threshold() -> None:
    m = binary_metrics(LABELS, SCORES, threshold=0.35)
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 0, 2)
    assert m.accuracy == pytest.approx(5 / 6) and m.precision == pytest.approx(3 / 4)
    assert m.recall == 1.0 and m.f1 == pytest.approx(6 / 7)
    assert m.auroc == pytest.approx(7 / 9)  # threshold-free
    nothing = binary_metrics(LABELS, SCORES, threshold=0.95)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)
    assert nothing.to_json()["threshold"] == 0.95


def test_ties_and_degenerate_cases() -> None:
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]) == pytest.approx((2 + 1.5) / 4)
    # tie at 0.5: one threshold takes both (precision 2/3 there)
    assert auprc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert auroc([1, 1], [0.2, 0.3]) is None and auprc([0, 0], [0.2, 0.3]) is None
    with pytest.raises(DatasetError):
        binary_metrics([1, 0], [0.5])
    with pytest.raises(DatasetError):
        auroc([1, 0], [math.nan, 0.1])


def test_multiclass_metrics() -> None:
    refs = ["cat", "cat", "dog", "bird", "dog"]
    preds = ["cat", "dog", "dog", "cat", "dog"]
    m = multiclass_metrics(refs, preds)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["cat"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["dog"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["dog"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["bird"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_exact_match_and_user_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert exact_match(" Hello  World ", "hello world") == 1.0
    assert exact_match("Hello", "hello", normalize=False) == 0.0
    (tmp_path / "my_scores.py").write_text(
        "def overlap(p, r):\n"
        "    a, b = set(p.split()), set(r.split())\n"
        "    return len(a & b) / len(a | b)\n"
        "def bad(p, r):\n"
        "    return 'yes'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    overlap = load_scorer("my_scores:overlap")
    assert overlap("a b", "b c") == pytest.approx(1 / 3)
    summary = score_all(["a b", "x"], ["a b", "y"], overlap)
    assert (summary.n, summary.mean, summary.scores) == (2, 0.5, [1.0, 0.0])
    assert score_all(["A"], ["a"], load_scorer("exact_match")).mean == 1.0
    with pytest.raises(DatasetError, match="must return a number"):
        load_scorer("my_scores:bad")("a", "b")
    for spec in ("nope", "no_such_module_xyz:f", "my_scores:missing"):
        with pytest.raises(ConfigError):
            load_scorer(spec)
    sys.modules.pop("my_scores", None)


def test_positive_probability_from_logprobs() -> None:
    top = {" positive": math.log(0.6), " negative": math.log(0.2), " maybe": math.log(0.2)}
    assert positive_probability(top, "positive", "negative") == pytest.approx(0.75)
    assert positive_probability({" x": 0.0}, "positive", "negative") is None
