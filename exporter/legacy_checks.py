"""The checks of the legacy `openai tools fine_tunes.prepare_data` (openai-python 0.x
`validators.py`) for prompt/completion rows, and the label-set checks of classification.

The statistics are gathered per chunk of rows (in pool workers) and merged in order, so a
million rows are checked without holding them: common prefixes and suffixes, letter case,
empty, long and badly started completions. Duplicates and distinct completions are counted
by the caller from row hashes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.checks import Finding, Severity, Tally

RECOMMENDED_EXAMPLES = 100
LONG_EXAMPLE_CHARS = 10_000
MAX_PROMPT_PREFIX = 12
MIN_COMPLETION_PREFIX = 5
LONG_SUFFIX = 10
CLASSIFICATION_THRESHOLD = 3  # fewer distinct completions than rows / 3: classification
_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_LOWER = bytes(range(ord("a"), ord("z") + 1))


def case_counts(text: str) -> tuple[int, int]:
    """(upper-case letters, lower-case letters)."""
    if text.isascii():
        raw = text.encode()
        return len(raw) - len(raw.translate(None, _UPPER)), len(raw) - len(
            raw.translate(None, _LOWER)
        )
    upper = sum(1 for c in text if c.isupper())
    lower = sum(1 for c in text if c.islower())
    return upper, lower


def common_prefix(a: str, b: str) -> str:
    if b.startswith(a):
        return a
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def common_suffix(a: str, b: str) -> str:
    if b.endswith(a):
        return a
    return common_prefix(a[::-1], b[::-1])[::-1]


def _prefix(a: str | None, b: str) -> str:
    return b if a is None else common_prefix(a, b)


def _suffix(a: str | None, b: str) -> str:
    return b if a is None else common_suffix(a, b)


@dataclass
class TextColumn:
    """Merged facts about one column (all prompts, or all completions)."""

    prefix: str | None = None
    suffix: str | None = None
    first: str | None = None
    identical: bool = True
    chars: int = 0
    upper: int = 0
    lower: int = 0

    def add(self, text: str) -> None:
        self.prefix, self.suffix = _prefix(self.prefix, text), _suffix(self.suffix, text)
        if self.first is None:
            self.first = text
        elif self.identical and text != self.first:
            self.identical = False
        self.chars += len(text)
        upper, lower = case_counts(text)
        self.upper += upper
        self.lower += lower

    def merge(self, other: TextColumn) -> None:
        if other.first is None:
            return
        self.identical = self.identical and other.identical and self.first in (None, other.first)
        self.first = other.first if self.first is None else self.first
        self.prefix = _prefix(self.prefix, other.prefix or "")
        self.suffix = _suffix(self.suffix, other.suffix or "")
        self.chars += other.chars
        self.upper += other.upper
        self.lower += other.lower


@dataclass
class PromptCompletionStats:
    rows: int = 0
    prompts: TextColumn = field(default_factory=TextColumn)
    completions: TextColumn = field(default_factory=TextColumn)
    empty_completion: Tally = field(default_factory=Tally)
    long_examples: Tally = field(default_factory=Tally)
    no_space_start: Tally = field(default_factory=Tally)

    def add(self, example_id: str, prompt: str, completion: str) -> None:
        self.rows += 1
        self.prompts.add(prompt)
        self.completions.add(completion)
        if not completion:
            self.empty_completion.add(example_id)
        elif not completion.startswith(" "):
            self.no_space_start.add(example_id)
        if len(prompt) + len(completion) > LONG_EXAMPLE_CHARS:
            self.long_examples.add(example_id)

    def merge(self, other: PromptCompletionStats) -> None:
        self.rows += other.rows
        self.prompts.merge(other.prompts)
        self.completions.merge(other.completions)
        self.empty_completion.merge(other.empty_completion)
        self.long_examples.merge(other.long_examples)
        self.no_space_start.merge(other.no_space_start)


def task_type(stats: PromptCompletionStats, distinct_completions: int) -> str:
    if stats.prompts.chars == 0:
        return "open-ended generation"
    if distinct_completions < stats.rows / CLASSIFICATION_THRESHOLD:
        return "classification"
    return "conditional generation"


def _shown(text: str) -> str:
    return text.replace("\n", "\\n")


def _tally(code: str, severity: Severity, message: str, tally: Tally) -> list[Finding]:
    if not tally.count:
        return []
    return [Finding(code, severity, message, tally.count, tuple(tally.ids))]


def _prompt_suffix(stats: PromptCompletionStats) -> list[Finding]:
    prompts = stats.prompts
    if prompts.identical and stats.rows > 1:
        message = f"all prompts are identical: `{_shown(prompts.first or '')}`"
        return [Finding("common_suffix", "error", message, stats.rows)]
    if not prompts.suffix:
        message = "the prompts have no common separator at their end"
        return [Finding("common_suffix", "warning", message, stats.rows)]
    message = f"all prompts end with `{_shown(prompts.suffix)}`, which occurs once in each"
    if len(prompts.suffix) > LONG_SUFFIX:
        return [Finding("common_suffix", "warning", message + "; this suffix is long")]
    return [Finding("common_suffix", "info", message)]


def _completion_suffix(stats: PromptCompletionStats, kind: str) -> list[Finding]:
    completions = stats.completions
    if kind in ("open-ended generation", "classification"):
        return []
    if completions.identical and stats.rows > 1:
        message = f"all completions are identical: `{_shown(completions.first or '')}`"
        return [Finding("common_completion_suffix", "error", message, stats.rows)]
    if not completions.suffix:
        message = "the completions have no common ending (stop sequence)"
        return [Finding("common_completion_suffix", "warning", message, stats.rows)]
    message = f"all completions end with `{_shown(completions.suffix)}`, which occurs once in each"
    severity: Severity = "warning" if len(completions.suffix) > LONG_SUFFIX else "info"
    return [Finding("common_completion_suffix", severity, message)]


def _prefixes(stats: PromptCompletionStats) -> list[Finding]:
    found = []
    prefix = stats.prompts.prefix or ""
    if len(prefix) > MAX_PROMPT_PREFIX and not stats.prompts.identical:
        message = (
            f"all prompts start with `{_shown(prefix)}`: fine-tuning needs no instruction "
            "in the prompt, only the input"
        )
        found.append(Finding("common_prompt_prefix", "warning", message, stats.rows))
    prefix = stats.completions.prefix or ""
    if len(prefix) >= MIN_COMPLETION_PREFIX and not stats.completions.identical:
        message = f"all completions start with `{_shown(prefix)}`: keep only the output"
        found.append(Finding("common_completion_prefix", "warning", message, stats.rows))
    return found


def _case(stats: PromptCompletionStats) -> list[Finding]:
    found = []
    for column, name in ((stats.prompts, "prompt"), (stats.completions, "completion")):
        if column.upper * 2 > column.lower:
            message = f"more than a third of the {name} letters are upper case"
            found.append(Finding(f"lower_case_{name}", "warning", message))
    return found


def prepare_data_findings(
    stats: PromptCompletionStats, duplicates: Tally, distinct_completions: int
) -> tuple[list[Finding], dict[str, Any]]:
    """Every prepare_data check as findings, plus a summary for the manifest."""
    kind = task_type(stats, distinct_completions)
    few = stats.rows < RECOMMENDED_EXAMPLES
    message = f"{stats.rows} prompt-completion pairs" + (
        "; at least a few hundred are recommended" if few else ""
    )
    found = [Finding("num_examples", "warning" if few else "info", message, stats.rows)]
    found += _tally("empty_completion", "error", "empty completions", stats.empty_completion)
    if kind == "classification":
        found.append(Finding("task_type", "info", "the data looks like classification"))
    found += _tally("duplicated_rows", "warning", "duplicated prompt-completion pairs", duplicates)
    if kind != "open-ended generation":
        message = f"examples longer than {LONG_EXAMPLE_CHARS} characters"
        found += _tally("long_examples", "warning", message, stats.long_examples)
    found += _case(stats)
    if kind != "open-ended generation":
        found += _prompt_suffix(stats)
    found += _prefixes(stats)
    found += _completion_suffix(stats, kind)
    message = "completions that don't start with one space"
    found += _tally("completion_space_start", "warning", message, stats.no_space_start)
    summary = {
        "task_type": kind,
        "common_prompt_suffix": stats.prompts.suffix,
        "common_prompt_prefix": stats.prompts.prefix,
        "common_completion_suffix": stats.completions.suffix,
        "distinct_completions": distinct_completions,
    }
    return found, summary


def label_findings(
    labels: Mapping[str, int], declared: Sequence[str] | None, positive_class: str | None
) -> tuple[list[Finding], dict[str, Any]]:
    """Classification label set: number of classes, and the positive class of a binary task."""
    counts = Counter(labels)
    classes = list(declared) if declared is not None else sorted(counts)
    found: list[Finding] = []
    if len(classes) < 2:
        message = f"a classifier needs at least 2 classes; found {classes}"
        found.append(Finding("too_few_classes", "error", message))
    unseen = [c for c in classes if counts.get(c, 0) == 0]
    if unseen:
        found.append(Finding("labels_unseen", "warning", f"labels with no example: {unseen}"))
    if len(classes) == 2 and positive_class is None:
        message = f"binary classification needs a positive class: one of {classes}"
        found.append(Finding("positive_class_missing", "error", message))
    elif positive_class is not None and positive_class not in classes:
        message = f"positive class {positive_class!r} is not one of {classes}"
        found.append(Finding("positive_class_unknown", "error", message))
    elif positive_class is not None and len(classes) > 2:
        message = "a positive class only applies to binary classification; ignored"
        found.append(Finding("positive_class_ignored", "warning", message))
    summary = {
        "n_classes": len(classes),
        "positive_class": positive_class if len(classes) == 2 else None,
        "labels": {c: counts.get(c, 0) for c in classes},
    }
    return found, summary
