"""The per-chunk work of an export, run in pool workers: format, check, count, hash.

Everything the main process needs later comes back compact: the JSONL lines as one bytes
blob, and per emitted example a few integers (fingerprint, row hash, token counts). The
examples themselves stay in the main process only as long as their chunk is in flight.
"""

from __future__ import annotations

import gc
import hashlib
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from exporter.checks import (
    CHECKS,
    Tally,
    chat_row_problems,
    preference_row_problems,
    prompt_completion_row_problems,
)
from exporter.examples import Example, answer_edited, fingerprint, prompt_fingerprint
from exporter.formats import ExampleError, FormatOptions, Skipped, format_example
from exporter.legacy_checks import PromptCompletionStats
from exporter.strip import MISMATCH, TemplateStrip, strip_example
from exporter.tokens import TokenCounter, token_counter
from tuneloop.errors import TemplateMismatch

_LINE = orjson.OPT_APPEND_NEWLINE
UNTRAINABLE = "untrainable"  # the skip reason of examples without a final answer
LEGACY_COMPLETION = "legacy_completion"  # a /v1/completions row left out of a chat export
INVALID = "invalid:"  # prefix of the skip reason of an example --skip-invalid left out
_CHAT_SHAPED = ("chat", "preference")


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    options: FormatOptions
    encoding: str
    include_legacy: bool = False  # chat/preference: take /v1/completions rows too
    skip_invalid: bool = False  # leave out (and count) examples that break a rule
    strip: TemplateStrip | None = None  # export without this prompt template

    @property
    def prompt_completion(self) -> bool:
        return self.options.format in ("legacy", "classification")


@dataclass(slots=True)
class ChunkResult:
    lines: bytes = b""
    lengths: array[int] = field(default_factory=lambda: array("q"))  # bytes of each line
    emitted: bytearray = field(default_factory=bytearray)  # per input example: 1 = a line
    lineage: bytes = b""  # per input example, the start of its lineage.jsonl record
    fingerprints: array[int] = field(default_factory=lambda: array("q"))  # per line
    prompt_fingerprints: array[int] = field(default_factory=lambda: array("q"))  # per line
    row_hashes: array[int] = field(default_factory=lambda: array("q"))  # prompt/completion
    answer_hashes: array[int] = field(default_factory=lambda: array("q"))
    tokens: array[int] = field(default_factory=lambda: array("i"))
    answer_tokens: array[int] = field(default_factory=lambda: array("i"))
    messages: array[int] = field(default_factory=lambda: array("i"))
    problems: dict[str, Tally] = field(default_factory=dict)
    violations: dict[str, Tally] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (index in chunk, reason)
    mismatched: Tally = field(default_factory=Tally)  # skipped: not the template to strip
    mismatch_parts: list[tuple[int, str]] = field(default_factory=list)  # (index, part differing)
    labels: Counter[str] = field(default_factory=Counter)
    line_labels: list[str] = field(default_factory=list)  # classification: per line
    stats: PromptCompletionStats | None = None


def prepare_worker(encoding: str) -> None:
    """Pool initializer: load the tokenizer once. A worker builds and drops many small
    containers and never a cycle, so the cyclic collector runs rarely there."""
    token_counter(encoding)
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def lineage_prefix(example: Example) -> bytes:
    """`{"interaction_id":…,"revision_id":…,"revision":…,"edited":…,` (the export adds where
    it went; `edited`: the final answer is a reviewer's edit (an edit of other messages only
    keeps the logged answer), which evaluation's judge takes as a reference). JSON escapes
    newlines, so prefixes can be joined with one."""
    record = {
        "interaction_id": example.interaction_id,
        "revision_id": example.revision_id,
        "revision": example.revision,
        "edited": answer_edited(example),
    }
    return orjson.dumps(record)[:-1] + b","


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _chat_counts(counter: TokenCounter, row: Mapping[str, Any]) -> tuple[int, int, int]:
    total, answer = counter.chat(row["messages"], row.get("tools"))
    return total, answer, len(row["messages"])


def _preference_counts(counter: TokenCounter, row: Mapping[str, Any]) -> tuple[int, int, int]:
    prompt = row["input"]
    preferred, rejected = row["preferred_output"], row["non_preferred_output"]
    total, answer = counter.chat([*prompt["messages"], *preferred], prompt.get("tools"))
    total += sum(counter.message(m) for m in rejected if isinstance(m, Mapping))
    return total, answer, len(prompt["messages"]) + 1


def _text_counts(counter: TokenCounter, row: Mapping[str, Any]) -> tuple[int, int, int]:
    answer = counter.text(row["completion"])
    return counter.text(row["prompt"]) + answer, answer, 2


_CHECKERS: Mapping[str, Callable[[Any], list[str]]] = {
    "chat": chat_row_problems,
    "preference": preference_row_problems,
    "legacy": prompt_completion_row_problems,
    "classification": prompt_completion_row_problems,
}
_COUNTERS: Mapping[str, Callable[[TokenCounter, Mapping[str, Any]], tuple[int, int, int]]] = {
    "chat": _chat_counts,
    "preference": _preference_counts,
    "legacy": _text_counts,
    "classification": _text_counts,
}


def _label(completion: str, stop: str | None) -> str:
    if stop and completion.endswith(stop):
        completion = completion[: -len(stop)]
    return completion.strip()


def _add_row(
    result: ChunkResult, spec: ChunkSpec, example: Example, row: dict[str, Any], line: bytes
) -> None:
    counter = token_counter(spec.encoding)
    total, answer, messages = _COUNTERS[spec.options.format](counter, row)
    result.tokens.append(total)
    result.answer_tokens.append(answer)
    result.messages.append(messages)
    result.fingerprints.append(fingerprint(example))
    result.prompt_fingerprints.append(prompt_fingerprint(example))
    if result.stats is not None:
        result.row_hashes.append(hash64(line))
        prompt, completion = row["prompt"], row["completion"]
        result.stats.add(example.interaction_id, prompt, completion)
        result.answer_hashes.append(hash64(completion.encode()))
        if spec.options.format == "classification":
            label = _label(completion, spec.options.effective_stop)
            result.labels[label] += 1
            result.line_labels.append(label)  # the split is stratified by it


def _skip_reason(spec: ChunkSpec, example: Example) -> str | None:
    """Why an example is left out before it is formatted, if it is."""
    if example.untrainable:  # no final answer to learn (storage.trainable)
        return UNTRAINABLE
    legacy_row = example.endpoint == "completions"
    if legacy_row and spec.options.format in _CHAT_SHAPED and not spec.include_legacy:
        return LEGACY_COMPLETION
    return None


def _violation(result: ChunkResult, spec: ChunkSpec, rule: str, example_id: str) -> str | None:
    """A broken format rule: the skip reason under --skip-invalid, else recorded (the export
    then stops naming it) and None."""
    if spec.skip_invalid:
        return INVALID + rule
    result.violations.setdefault(rule, Tally()).add(example_id)
    return None


def _format(result: ChunkResult, spec: ChunkSpec,
            example: Example) -> tuple[dict[str, Any], bytes] | str | None:
    """The example's row and JSONL line; or why it is left out; or None when it breaks a
    format rule (recorded in `result.violations`: the export then stops, naming it)."""
    reason = _skip_reason(spec, example)
    if reason is not None:
        return reason
    try:
        row = format_example(example, spec.options)
    except ExampleError as exc:
        return _violation(result, spec, exc.reason, exc.example_id)
    if isinstance(row, Skipped):
        return row.reason
    try:
        return row, orjson.dumps(row, option=_LINE)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate, or a value JSON can't hold
        return _violation(result, spec, "not_serializable", example.interaction_id)


Payload = bytes | Sequence[Example]


def encode_chunk(examples: Sequence[Example]) -> Payload:
    """What goes to a worker: a JSON array of example tuples (several times cheaper to send
    than pickled dicts), or the examples themselves when some value isn't JSON (the worker
    then names them)."""
    try:
        return orjson.dumps([tuple(example) for example in examples])
    except orjson.JSONEncodeError:
        return examples


def decode_chunk(payload: Payload) -> Sequence[Example]:
    if isinstance(payload, bytes):
        return [Example(*fields) for fields in orjson.loads(payload)]
    return payload


def process_chunk(spec: ChunkSpec, payload: Payload) -> ChunkResult:
    """Format, check and count one chunk of examples (pure apart from the tokenizer cache)."""
    examples = decode_chunk(payload)
    result = ChunkResult(stats=PromptCompletionStats() if spec.prompt_completion else None)
    check = _CHECKERS[spec.options.format]
    lines: list[bytes] = []
    lineage = [lineage_prefix(example) for example in examples]
    for index, example in enumerate(examples):
        if spec.strip is not None and _skip_reason(spec, example) is None:
            try:
                example = strip_example(example, spec.strip)
            except TemplateMismatch as exc:  # skipped, never kept whole (exporter.strip)
                result.skipped.append((index, MISMATCH))
                result.mismatch_parts.append((index, exc.part))
                result.mismatched.add(example.interaction_id)
                result.emitted.append(0)
                continue
        outcome = _format(result, spec, example)
        if not isinstance(outcome, tuple):  # left out (a reason) or breaking a rule (None)
            if outcome is not None:
                result.skipped.append((index, outcome))
            result.emitted.append(0)
            continue
        row, line = outcome
        codes = check(row)
        broken = [c for c in codes if CHECKS.get(c, ("error",))[0] == "error"]
        if spec.skip_invalid and broken:
            result.skipped.append((index, INVALID + broken[0]))
            result.emitted.append(0)
            continue
        for code in codes:
            result.problems.setdefault(code, Tally()).add(example.interaction_id)
        lines.append(line)
        result.lengths.append(len(line))
        result.emitted.append(1)
        _add_row(result, spec, example, row, line)
    result.lines = b"".join(lines)
    result.lineage = b"\n".join(lineage)
    return result
