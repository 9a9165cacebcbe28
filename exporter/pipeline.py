"""Export: examples in, a validated export directory out.

The examples are streamed in chunks to a process pool (format, check, exact token counts),
their lines spooled to disk in input order. Once all are seen, the split is computed from
compact per-line keys, the report is built, and a second pass routes the spooled lines to
`train.jsonl` / `validation.jsonl`. Everything is written to a temporary sibling directory
that is renamed into place only when the dataset passes validation: a failed export leaves
nothing behind but the error, which names the offending examples.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import uuid
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from exporter.checks import Finding, Tally, merge_tallies
from exporter.chunks import (
    INVALID,
    LEGACY_COMPLETION,
    UNTRAINABLE,
    ChunkResult,
    ChunkSpec,
    encode_chunk,
    prepare_worker,
    process_chunk,
)
from exporter.examples import Example
from exporter.exportdir import (
    LINEAGE_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    Lineage,
    open_private,
    write_json,
    write_split_files,
)
from exporter.formats import FormatOptions, RuleViolations
from exporter.left_out import warn_left_out
from exporter.legacy_checks import PromptCompletionStats
from exporter.report import DatasetFacts, ValidationReport, build_report
from exporter.split import Grouper, SplitResult, check_fraction
from exporter.strip import MISMATCH, TemplateStrip
from exporter.tokens import model_info
from tuneloop.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class ExportOptions:
    name: str
    format: FormatOptions = field(default_factory=FormatOptions)
    base_model: str = "gpt-4o-mini-2024-07-18"
    validation_fraction: float = 0.1
    seed: int = 0
    workers: int | None = None  # None: every core; 1: in this process
    chunk_size: int = 2_000
    filter: Mapping[str, Any] = field(default_factory=dict)  # how the examples were chosen
    overwrite: bool = False
    include_legacy: bool = False  # chat/preference: also take legacy /v1/completions rows
    skip_invalid: bool = False  # leave out examples that break a rule (listed in the report)
    strip: TemplateStrip | None = None  # export without this prompt template (exporter.strip)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    report: ValidationReport
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, for benchmarks


class DatasetRejected(RuleViolations):
    """The dataset fails validation; `report` says everything, the message names examples."""

    def __init__(self, report: ValidationReport):
        self.report = report
        problems = {f.code: list(f.examples) for f in report.errors}
        counts = {f.code: f.count for f in report.errors}
        super().__init__(problems, counts, what="the dataset fails validation")


class _Gathered:
    """What the main process keeps: compact per-example facts, never the examples. The
    grouping for the split happens here, while the examples stream in."""

    def __init__(self, prompt_completion: bool):
        self.examples = 0
        self.emitted = bytearray()
        self.skipped: dict[int, str] = {}
        self.untrainable = Tally()  # skipped: no final answer (an error, a cut stream, ...)
        self.left_out: dict[str, Tally] = {}  # legacy rows and --skip-invalid, by reason
        self.mismatched = Tally()  # skipped: does not hold the template to strip
        self.mismatch_parts: dict[int, str] = {}  # input index -> the template part differing
        self.lineage: list[bytes] = []
        self.grouper = Grouper()
        self.lengths: array[int] = array("q")
        self.row_hashes: array[int] = array("q")
        self.answer_hashes: array[int] = array("q")
        self.tokens: array[int] = array("i")
        self.answer_tokens: array[int] = array("i")
        self.messages: array[int] = array("i")
        self.problems: dict[str, Tally] = {}
        self.violations: dict[str, Tally] = {}
        self.labels: Counter[str] = Counter()
        self.stats = PromptCompletionStats() if prompt_completion else None

    def add(self, chunk: list[Example], result: ChunkResult) -> None:
        lines = [e for e, out in zip(chunk, result.emitted, strict=True) if out]
        self.grouper.add(
            result.fingerprints, [e.session_id for e in lines], [e.interaction_id for e in lines],
            result.line_labels or None, result.prompt_fingerprints,
        )
        for index, reason in result.skipped:
            self.skipped[self.examples + index] = reason
            if reason == UNTRAINABLE:
                self.untrainable.add(chunk[index].interaction_id)
            elif reason == LEGACY_COMPLETION or reason.startswith(INVALID):
                self.left_out.setdefault(reason, Tally()).add(chunk[index].interaction_id)
        self.mismatched.merge(result.mismatched)
        for index, part in result.mismatch_parts:
            self.mismatch_parts[self.examples + index] = part
        self.examples += len(chunk)
        self.emitted += result.emitted
        self.lineage.append(result.lineage)
        for mine, theirs in (
            (self.lengths, result.lengths),
            (self.row_hashes, result.row_hashes),
            (self.answer_hashes, result.answer_hashes),
            (self.tokens, result.tokens),
            (self.answer_tokens, result.answer_tokens),
            (self.messages, result.messages),
        ):
            mine.extend(theirs)
        merge_tallies(self.problems, result.problems)
        merge_tallies(self.violations, result.violations)
        self.labels.update(result.labels)
        if self.stats is not None and result.stats is not None:
            self.stats.merge(result.stats)


def _chunks(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    iterator = iter(examples)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _results(
    spec: ChunkSpec, chunks: Iterator[list[Example]], workers: int
) -> Iterator[tuple[list[Example], ChunkResult]]:
    """Chunk results in input order; a pool only when there is more than one chunk."""
    head = list(islice(chunks, 2))
    if workers <= 1 or len(head) < 2:
        for chunk in chain(head, chunks):
            yield chunk, process_chunk(spec, chunk)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=prepare_worker, initargs=(spec.encoding,)
    )
    pending: deque[tuple[list[Example], Future[ChunkResult]]] = deque()
    try:
        for chunk in chain(head, chunks):
            pending.append((chunk, pool.submit(process_chunk, spec, encode_chunk(chunk))))
            if len(pending) >= 2 * workers:  # bounded: the input streams, memory stays flat
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    except BrokenProcessPool as exc:
        raise ConfigError(
            f"an export worker process died ({exc}); if it could not load the "
            f"{spec.encoding} tokenizer, its error is printed above"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _duplicates(ids: list[str], hashes: Iterable[int]) -> Tally:
    seen: set[int] = set()
    tally = Tally()
    for index, value in enumerate(hashes):
        if value in seen:
            tally.add(ids[index])
        seen.add(value)
    return tally


def _facts(options: ExportOptions, gathered: _Gathered, split: SplitResult) -> DatasetFacts:
    line_ids = gathered.grouper.ids
    near, same_prompt = Tally(), Tally()
    for index in split.duplicates:
        near.add(line_ids[index])
    for index in split.same_prompt:
        same_prompt.add(line_ids[index])
    prompt_completion = gathered.stats is not None
    return DatasetFacts(
        options=options.format,
        model=model_info(options.base_model),
        examples=gathered.examples,
        line_ids=line_ids,
        tokens=np.frombuffer(gathered.tokens, dtype=np.int32),
        answer_tokens=np.frombuffer(gathered.answer_tokens, dtype=np.int32),
        messages=np.frombuffer(gathered.messages, dtype=np.int32),
        sides=split.sides,
        validation_fraction=options.validation_fraction,
        problems=gathered.problems,
        skipped=Counter(gathered.skipped.values()),
        near_duplicates=near,
        exact_duplicates=_duplicates(line_ids, gathered.row_hashes)
        if prompt_completion
        else Tally(),
        distinct_completions=len(set(gathered.answer_hashes)),
        stats=gathered.stats,
        labels=gathered.labels,
        groups=split.groups,
        same_prompt=same_prompt,
        validation_groups=split.validation_groups,
    )


def _warn_untrainable(report: ValidationReport, skipped: Tally) -> None:
    """Approved items without a final answer are left out with a warning, not an error: one
    such item (approved before the review API refused it) must not stop every export."""
    message = ("approved items without a final answer (an upstream error, a cut stream, an "
               "empty answer) were skipped; edit them to supply the answer, or reject them")
    _warn_skipped(report, "untrainable_skipped", message, skipped)


def _warn_mismatched(report: ValidationReport, skipped: Tally, strip: TemplateStrip) -> None:
    message = (f"examples that do not hold the prompt template {strip.template.ref} (another "
               "system prompt, a few-shot turn missing, no prefix or suffix) were skipped, "
               "not kept whole; their lineage records say which")
    _warn_skipped(report, MISMATCH, message, skipped)


def _warn_skipped(report: ValidationReport, code: str, message: str, skipped: Tally) -> None:
    if not skipped.count:
        return
    finding = Finding(code, "warning", message, skipped.count, tuple(skipped.ids))
    warnings = [i for i, f in enumerate(report.findings) if f.severity != "error"]
    report.findings.insert(warnings[0] if warnings else len(report.findings), finding)


def _manifest(
    options: ExportOptions, report: ValidationReport, files: dict[str, dict[str, Any]],
    mismatch_parts: Mapping[int, str],
) -> dict[str, Any]:
    fmt = options.format
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "name": options.name,
        "created_at": datetime.now(UTC).isoformat(),
        "format": fmt.format,
        "base_model": options.base_model,
        "fine_tune_method": "dpo" if fmt.format == "preference" else "supervised",
        "filter": dict(options.filter),
        "split": {"validation_fraction": options.validation_fraction, "seed": options.seed},
        "counts": report.counts,
        "tokens": report.tokens,
        "billing": report.billing,
        "files": files,
        "lineage": LINEAGE_FILE,
        "include_legacy": options.include_legacy,
        "skip_invalid": options.skip_invalid,
        "warnings": [
            f"{w.code}" + (f" ({w.count})" if w.count else "") + f": {w.message}"
            for w in report.warnings
        ],
        "validation": report.to_json(),
    }
    if options.strip is not None:
        manifest["template"] = {**options.strip.manifest(),
                                "mismatches": dict(Counter(mismatch_parts.values()))}
    if fmt.format in ("legacy", "classification"):
        manifest["prompt_separator"] = fmt.separator
        manifest["stop"] = fmt.effective_stop
    if fmt.format == "classification":
        manifest["classification"] = report.details["classification"]
    return manifest


def _prepare_target(out: Path, overwrite: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(f"{out} exists and is not empty; choose another --out", param="out")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=0o700)  # users' prompts: owner only (the files inside are 0600)
    return work


def _move_into_place(work: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        work.rename(out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        work.rename(out)


def export(examples: Iterable[Example], out: Path, options: ExportOptions, *,
           left_out: Mapping[str, Tally] | None = None) -> ExportResult:
    """Format, validate, split and write `examples` to the export directory `out`.

    `left_out`: examples the caller's selection dropped under `skip_invalid` (rule -> ids),
    read once `examples` is exhausted and listed in the report with the others.

    Raises :class:`RuleViolations` when examples break a format rule and
    :class:`DatasetRejected` when the dataset fails validation; both name the examples.
    More than one chunk of examples is processed by a pool of spawned processes, so a script
    calling this must guard its entry point with `if __name__ == "__main__":`."""
    check_fraction(options.validation_fraction)
    if options.chunk_size < 1:
        raise DatasetError("chunk_size must be at least 1", param="chunk_size")
    spec = ChunkSpec(options.format, model_info(options.base_model).encoding,
                     include_legacy=options.include_legacy, skip_invalid=options.skip_invalid,
                     strip=options.strip)
    workers = options.workers or len(os.sched_getaffinity(0))
    work = _prepare_target(out, options.overwrite)
    clock = time.perf_counter
    seconds: dict[str, float] = {}
    try:
        started = clock()
        gathered = _Gathered(spec.prompt_completion)
        spool = work / ".lines.spool"
        with open_private(spool) as sink:
            for chunk, result in _results(spec, _chunks(examples, options.chunk_size), workers):
                sink.write(result.lines)
                gathered.add(chunk, result)
        for rule, tally in (left_out or {}).items():
            merge_tallies(gathered.left_out, {INVALID + rule: tally})
        if gathered.violations:
            counts = {code: t.count for code, t in gathered.violations.items()}
            raise RuleViolations({c: t.ids for c, t in gathered.violations.items()}, counts)
        seconds["format_check_count"] = clock() - started
        started = clock()
        split = gathered.grouper.assign(options.validation_fraction, options.seed)
        facts = _facts(options, gathered, split)
        report = build_report(facts)
        _warn_untrainable(report, gathered.untrainable)
        warn_left_out(report, gathered.left_out)
        if options.strip is not None:
            _warn_mismatched(report, gathered.mismatched, options.strip)
        seconds["split_report"] = clock() - started
        started = clock()
        if not report.ok:
            raise DatasetRejected(report)
        lineage = Lineage(gathered.emitted, gathered.skipped, gathered.lineage,
                          gathered.mismatch_parts, split.group_of)
        files = write_split_files(
            work,
            spool,
            np.frombuffer(gathered.lengths, dtype=np.int64),
            np.frombuffer(bytes(facts.sides), dtype=np.uint8),
            lineage,
        )
        spool.unlink()
        manifest = _manifest(options, report, files, gathered.mismatch_parts)
        write_json(work / MANIFEST_FILE, manifest)
        _move_into_place(work, out)
        seconds["write"] = clock() - started
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(out, manifest, report, seconds)
