"""The validation report: findings, token statistics, default epochs and the cost estimate.

Built from what an export gathered (:class:`DatasetFacts`), rendered as readable text for the
terminal and as JSON for the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter.checks import Finding, Tally, finding_from_tally
from exporter.formats import FormatOptions
from exporter.legacy_checks import PromptCompletionStats, label_findings, prepare_data_findings
from exporter.tokens import MIN_TRAINING_EXAMPLES, ModelInfo, billed_tokens, default_epochs

_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class DatasetFacts:
    """Everything an export learned about its rows, in line order (one entry per line)."""

    options: FormatOptions
    model: ModelInfo
    examples: int
    line_ids: Sequence[str]
    tokens: np.ndarray
    answer_tokens: np.ndarray
    messages: np.ndarray
    sides: bytearray
    validation_fraction: float
    problems: Mapping[str, Tally] = field(default_factory=dict)
    skipped: Mapping[str, int] = field(default_factory=dict)
    near_duplicates: Tally = field(default_factory=Tally)
    exact_duplicates: Tally = field(default_factory=Tally)
    distinct_completions: int = 0
    stats: PromptCompletionStats | None = None
    labels: Mapping[str, int] = field(default_factory=dict)
    groups: int = 0
    same_prompt: Tally = field(default_factory=Tally)  # one prompt, another answer
    validation_groups: int = 0


def distribution(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {
        "min": int(values.min()),
        "max": int(values.max()),
        "mean": round(float(values.mean()), 2),
        "median": round(float(median), 2),
        "p5": round(float(p5), 2),
        "p95": round(float(p95), 2),
    }


def _token_stats(facts: DatasetFacts, mask: np.ndarray) -> dict[str, Any]:
    tokens = facts.tokens[mask]
    limit = facts.model.example_limit
    return {
        "examples": int(tokens.size),
        "total_tokens": int(tokens.sum()),
        "billed_tokens_per_epoch": billed_tokens(tokens, limit),
        "tokens_per_example": distribution(tokens),
        "answer_tokens_per_example": distribution(facts.answer_tokens[mask]),
        "messages_per_example": distribution(facts.messages[mask]),
    }


def _tally_of(ids: Sequence[str], indexes: np.ndarray) -> Tally:
    tally = Tally()
    for index in indexes[:20].tolist():
        tally.add(ids[index])
    tally.count = int(indexes.size)
    return tally


def _dataset_findings(facts: DatasetFacts, n_train: int, n_validation: int) -> list[Finding]:
    found: list[Finding] = []
    legacy_format = facts.options.format in ("legacy", "classification")
    if legacy_format != facts.model.legacy:
        wants = "prompt/completion" if facts.model.legacy else "chat or preference"
        message = f"{facts.model.name} trains on {wants} files, not {facts.options.format}"
        found.append(Finding("format_model_mismatch", "error", message))
    if n_train < MIN_TRAINING_EXAMPLES:
        message = f"{n_train} training examples; OpenAI needs at least {MIN_TRAINING_EXAMPLES}"
        found.append(Finding("too_few_examples", "error", message, n_train))
    over = np.flatnonzero(facts.tokens > facts.model.example_limit)
    if over.size:
        message = (
            f"examples over the {facts.model.example_limit:,}-token limit of "
            f"{facts.model.name}; they will be truncated"
        )
        tally = _tally_of(facts.line_ids, over)
        found.append(Finding("over_token_limit", "warning", message, tally.count, tuple(tally.ids)))
    if facts.validation_fraction > 0 and n_validation == 0:
        message = "no validation examples: the dataset is too small or one group holds it all"
        found.append(Finding("validation_empty", "warning", message))
    if facts.near_duplicates.count:
        message = "duplicates (exact or up to whitespace and case), kept on one side of the split"
        tally = facts.near_duplicates
        found.append(Finding("duplicates", "warning", message, tally.count, tuple(tally.ids)))
    if facts.same_prompt.count:
        message = ("the same prompt with another answer (sampled twice, or edited on one "
                   "copy), kept on one side of the split with its other answers")
        tally = facts.same_prompt
        found.append(Finding("same_prompt", "info", message, tally.count, tuple(tally.ids)))
    if facts.model.training_price_per_1m is None:
        message = f"no training price known for {facts.model.name}; cost not estimated"
        found.append(Finding("unknown_price", "info", message))
    return found


@dataclass
class ValidationReport:
    format: str
    model: str
    encoding: str
    findings: list[Finding]
    counts: dict[str, Any]
    tokens: dict[str, Any]
    billing: dict[str, Any]
    details: dict[str, Any]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "format": self.format,
            "model": self.model,
            "encoding": self.encoding,
            "counts": self.counts,
            "findings": [f.to_json() for f in self.findings],
            "tokens": self.tokens,
            "billing": self.billing,
            "details": self.details,
        }

    def render(self) -> str:
        return render(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ValidationReport:
        """The report as a manifest stores it (`to_json`), e.g. to render it again."""
        findings = [Finding(f["code"], f["severity"], f["message"], f.get("count", 0),
                            tuple(f.get("examples", ()))) for f in data.get("findings", ())]
        return cls(data["format"], data["model"], data["encoding"], findings,
                   dict(data["counts"]), dict(data["tokens"]), dict(data["billing"]),
                   dict(data.get("details", {})))


def build_report(facts: DatasetFacts) -> ValidationReport:
    validation = np.frombuffer(bytes(facts.sides), dtype=np.uint8).astype(bool)
    n_validation = int(validation.sum())
    n_train = int(validation.size - n_validation)
    found = [finding_from_tally(code, tally) for code, tally in facts.problems.items()]
    found += _dataset_findings(facts, n_train, n_validation)
    details: dict[str, Any] = {"split_groups": facts.groups,
                               "validation_groups": facts.validation_groups}
    if facts.stats is not None:
        legacy, summary = prepare_data_findings(
            facts.stats, facts.exact_duplicates, facts.distinct_completions
        )
        found += legacy
        details["prepare_data"] = summary
    if facts.options.format == "classification":
        labels, summary = label_findings(
            facts.labels, facts.options.labels, facts.options.positive_class
        )
        found += labels
        details["classification"] = summary
    found.sort(key=lambda f: (_ORDER[f.severity], f.code))
    tokens = {
        "train": _token_stats(facts, ~validation),
        "validation": _token_stats(facts, validation),
    }
    epochs = default_epochs(n_train)
    per_epoch = tokens["train"]["billed_tokens_per_epoch"]
    price = facts.model.training_price_per_1m
    billing = {
        "default_epochs": epochs,
        "billed_tokens_per_epoch": per_epoch,
        "billed_tokens": per_epoch * epochs,
        "price_per_1m_tokens": price,
        "estimated_cost_usd": None if price is None else round(per_epoch * epochs * price / 1e6, 4),
    }
    counts = {
        "examples": facts.examples,
        "train": n_train,
        "validation": n_validation,
        "skipped": dict(facts.skipped),
    }
    return ValidationReport(
        facts.options.format,
        facts.model.name,
        facts.model.encoding,
        found,
        counts,
        tokens,
        billing,
        details,
    )


def _line(finding: Finding) -> str:
    mark = {"error": "ERROR", "warning": "warn ", "info": "info "}[finding.severity]
    count = f" ({finding.count})" if finding.count else ""
    text = f"  {mark} {finding.code}{count}: {finding.message}"
    if finding.examples:
        shown = finding.examples[:5]
        text += "\n        e.g. " + ", ".join(shown)
        if finding.count > len(shown):
            text += f" and {finding.count - len(shown)} more"
    return text


def _dist(name: str, dist: Mapping[str, float]) -> str:
    if not dist:
        return f"  {name}: -"
    return (
        f"  {name}: min/max {dist['min']}/{dist['max']}, mean/median {dist['mean']}/"
        f"{dist['median']}, p5/p95 {dist['p5']}/{dist['p95']}"
    )


SKIP_REASONS = {
    "not_edited": "the answer was not edited, so there is no preference to learn: a "
                  "preference pair needs a reviewer's edit of the logged answer",
}
"""Why the format left an example out (exporter/formats.py `Skipped`), for people."""


def _skip_lines(skipped: Mapping[str, int]) -> list[str]:
    return [f"  skipped {reason} ({count}): {SKIP_REASONS.get(reason, reason)}"
            for reason, count in sorted(skipped.items()) if count]


def render(report: ValidationReport) -> str:
    counts = report.counts
    skipped = sum(counts["skipped"].values())
    lines = [
        f"Dataset check: {report.format} for {report.model} ({report.encoding})",
        f"  {counts['examples']} examples: {counts['train']} train, "
        f"{counts['validation']} validation, {skipped} skipped",
        *_skip_lines(counts["skipped"]),
    ]
    lines += [_line(f) for f in report.findings] or ["  no problems found"]
    for side in ("train", "validation"):
        stats = report.tokens[side]
        lines.append(f"{side}: {stats['examples']} examples, {stats['total_tokens']:,} tokens")
        lines.append(_dist("tokens per example", stats["tokens_per_example"]))
        lines.append(_dist("answer tokens per example", stats["answer_tokens_per_example"]))
        lines.append(_dist("messages per example", stats["messages_per_example"]))
    billing = report.billing
    cost = billing["estimated_cost_usd"]
    lines.append(
        f"By default you'll train for {billing['default_epochs']} epochs and be charged for "
        f"~{billing['billed_tokens']:,} tokens"
        + (
            f" (~${cost:,.2f} at ${billing['price_per_1m_tokens']:.2f} per 1M)"
            if cost is not None
            else ""
        )
    )
    lines.append("OK" if report.ok else f"{len(report.errors)} error(s): fix them before training")
    return "\n".join(lines)
