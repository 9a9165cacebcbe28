"""Build a dataset from the admin API: select, format, validate, split, write, record.

The proxy owns DuckDB and never imports the exporter, so the work happens here, in the
caller's process (CLI, UI, scheduler): the server streams the examples a filter selects
(`GET /admin/datasets/examples`), :func:`exporter.pipeline.export` writes and validates the
export directory, and the snapshot (manifest and lineage: which interaction and revision went
to which line) is recorded back (`POST /admin/datasets`), which assigns its version. The
manifest then names the snapshot (`"snapshot": {"id", "name", "version"}`), so a fine-tune of
the directory is recorded against it.

    with AdminClient(api, token) as client:
        result = build_dataset(client, Path("exports/support-v1"), ExportOptions(
            name="support", format=FormatOptions("chat"), filter={"tag": "support"}))
    result.manifest["snapshot"]["version"]
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.checks import Tally
from exporter.examples import Example
from exporter.exportdir import LINEAGE_FILE, MANIFEST_FILE, write_json
from exporter.formats import MAX_NAMED, RuleViolations
from exporter.pipeline import ExportOptions, ExportResult, export
from tuneloop.client import AdminClient
from tuneloop.errors import DatasetError
from tuneloop.names import dataset_name, path_under

# the filters of GET /admin/datasets/examples (see storage.dataset_examples)
FILTER_KEYS = ("review", "model", "tag", "user", "session", "since", "until", "q", "min_score",
               "has_error", "status_code", "traffic", "endpoint", "label_prefix", "label_field",
               "max_examples")
DEFAULT_FILTER: Mapping[str, str] = {"review": "approved"}
_UPLOAD_CHUNK = 1 << 20


def parse_filters(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` pairs (the CLI's repeated --filter) as a filter; unknown or repeated keys
    and empty values are refused, so a typo can't widen a dataset to everything."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            raise DatasetError(f"--filter {pair!r}: use key=value with a key among "
                               f"{', '.join(FILTER_KEYS)}", param="filter")
        if key in out:
            raise DatasetError(f"--filter {key} is given twice", param="filter")
        if not value.strip():  # `--filter q=` would otherwise select as if no filter were given
            raise DatasetError(f"--filter {key}= has no value: give one, or leave the filter "
                               "out", param="filter")
        out[key] = value.strip()
    return out


def effective_filter(filter: Mapping[str, Any] | None) -> dict[str, str]:
    """The defaults (approved items) under the given filter, as the query string sends it."""
    given = {k: v for k, v in (filter or {}).items() if v is not None and v != ""}
    unknown = set(given) - set(FILTER_KEYS)
    if unknown:
        raise DatasetError(f"unknown filters {sorted(unknown)}; allowed: {', '.join(FILTER_KEYS)}",
                           param="filter")
    values = {k: ("true" if v else "false") if isinstance(v, bool) else str(v)
              for k, v in given.items()}
    return {**DEFAULT_FILTER, **values}


def example_of(item: Mapping[str, Any]) -> Example:
    """An example line of the stream as the exporter's input type."""
    return Example(
        interaction_id=item["interaction_id"],
        messages=item["messages"],
        tools=item.get("tools"),
        revision_id=item.get("revision_id"),
        revision=item.get("revision"),
        original=item.get("original"),
        session_id=item.get("session_id"),
        label=item.get("label"),
        parallel_tool_calls=item.get("parallel_tool_calls"),
        untrainable=item.get("untrainable"),
        endpoint=item.get("endpoint"),
    )


def stream_examples(client: AdminClient, filter: Mapping[str, Any] | None = None, *,
                    classification: bool = False,
                    left_out: dict[str, Tally] | None = None) -> Iterator[Example]:
    """The selected examples as they stream in. For classification, an interaction with
    several label tags is an error naming it (raised once the stream has been read), or,
    when `left_out` is given (--skip-invalid), left out and counted there."""
    conflicts: list[str] = []
    conflicted = 0
    for item in client.dataset_examples(effective_filter(filter)):
        if classification and item.get("label_conflict") and left_out is not None:
            left_out.setdefault("conflicting_labels", Tally()).add(item["interaction_id"])
            continue
        if classification and item.get("label_conflict"):
            conflicted += 1
            if len(conflicts) < MAX_NAMED:
                conflicts.append(f"{item['interaction_id']} ({', '.join(item['label_conflict'])})")
            continue
        yield example_of(item)
    if conflicted:
        raise RuleViolations({"conflicting_labels": conflicts},
                             {"conflicting_labels": conflicted})


def record_snapshot(client: AdminClient, result: ExportResult, *,
                    reviewer: str | None = None) -> dict[str, Any]:
    """Record an export directory as the next version of its dataset; the manifest on disk
    then names the snapshot. Returns the recorded snapshot. `reviewer`: the person recording
    it (its `created_by`; default: the client's actor)."""
    manifest = result.manifest
    header = {"name": manifest["name"], "format": manifest["format"],
              "filter": manifest.get("filter") or {}, "manifest": manifest,
              "path": str(result.path.resolve())}
    with (result.path / LINEAGE_FILE).open("rb") as lineage:
        chunks = iter(lambda: lineage.read(_UPLOAD_CHUNK), b"")
        snapshot = client.record_dataset(header, chunks, reviewer=reviewer)
    return snapshot


def build_dataset(client: AdminClient, out: Path, options: ExportOptions, *,
                  record: bool = True, reviewer: str | None = None) -> ExportResult:
    """Export the examples `options.filter` selects (approved by default) to `out` and
    record the snapshot (by `reviewer` when given, e.g. the reviewer signed in to the app).
    Raises RuleViolations / DatasetRejected (nothing written) when examples break a format
    rule or the dataset fails validation. If recording fails, the directory is removed again:
    an export and its snapshot exist together or not at all."""
    dataset_name(options.name)
    options = dataclasses.replace(options, filter=effective_filter(options.filter))
    left_out: dict[str, Tally] | None = {} if options.skip_invalid else None
    examples = stream_examples(client, options.filter, left_out=left_out,
                               classification=options.format.format == "classification")
    result = export(examples, out, options, left_out=left_out)
    if not record:
        return result
    return record_export(client, result, reviewer=reviewer)


def record_export(client: AdminClient, result: ExportResult, *,
                  reviewer: str | None = None) -> ExportResult:
    """Record an export directory built with `record=False` as the next version of its
    dataset; the directory is removed if recording fails."""
    try:
        snapshot = record_snapshot(client, result, reviewer=reviewer)
    except BaseException:
        shutil.rmtree(result.path, ignore_errors=True)
        raise
    manifest = {**result.manifest, "snapshot": {k: snapshot[k] for k in ("id", "name",
                                                                        "version")}}
    write_json(result.path / MANIFEST_FILE, manifest)
    return dataclasses.replace(result, manifest=manifest)


def snapshot_dir(root: Path, name: str, now: datetime | None = None) -> Path:
    """A fresh directory path for a build of `name` under `root` (the UI's export root):
    `root/<name>/<UTC time>`, resolved and refused if it would leave `root`."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return path_under(root, dataset_name(name), stamp)
