"""The cycle's seam to the dataset and fine-tuning half of issue 4 (branch `datasets`).

`tuneloop cycle` calls only these three functions for its export, fine-tune and wait steps.

INTEGRATION: when `exporter/datasets.py` and `exporter/finetune.py` land, replace the three
bodies below with calls to `exporter.datasets.build_dataset` and `exporter.finetune.start_job`
/ `wait_for_job` (which also record the snapshot and the job in storage). Until then they are
minimal stand-ins on the existing pipeline and provider: the examples are read page by page
through the admin API, exported with `exporter.pipeline.export`, and trained with
`OpenAIFineTuning` (the `openai` SDK: `OPENAI_API_KEY` / `OPENAI_BASE_URL`). The stand-ins
record no dataset snapshot and no job row; the cycle keeps the job id in its own state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from exporter.examples import Example
from exporter.exportdir import load_export
from exporter.pipeline import ExportOptions, ExportResult, export
from exporter.providers.base import JobSpec, TransientProviderError
from exporter.providers.openai_ft import OpenAIFineTuning
from tuneloop.client import AdminClient

PAGE = 1000
DEFAULT_FILTER = {"review": "approved", "traffic": "production"}


def _examples(client: AdminClient, filter: Mapping[str, Any]) -> Iterator[Example]:
    cursor: str | None = None
    while True:
        page = client.interactions(**{**DEFAULT_FILTER, **filter}, compact=True, limit=PAGE,
                                   cursor=cursor)
        for item in page["items"]:
            if item.get("messages"):
                yield Example(item["id"], item["messages"], revision=item.get("revision"),
                              session_id=item.get("session_id"))
        cursor = page.get("next_cursor")
        if not cursor:
            return


def build_dataset(client: AdminClient, name: str, options: ExportOptions,
                  filter: Mapping[str, Any], out: Path) -> ExportResult:
    """Export the examples `filter` selects (default: approved production traffic) to `out`.
    Returns the result with `.path` and `.manifest` (billing.estimated_cost_usd)."""
    # INTEGRATION: return exporter.datasets.build_dataset(client, name, options, filter)
    # (passing `out` the way that API takes the export directory).
    chosen = {**options.filter, **filter}
    return export(_examples(client, chosen), out,
                  ExportOptions(name=name, format=options.format, base_model=options.base_model,
                                validation_fraction=options.validation_fraction,
                                seed=options.seed, workers=options.workers,
                                filter={**DEFAULT_FILTER, **chosen}, overwrite=True))


def start_job(client: AdminClient, export_dir: Path, base_model: str, method: str,
              suffix: str | None, seed: int | None,
              hyperparameters: Mapping[str, Any]) -> str:
    """Upload the export and create the fine-tuning job; its id."""
    # INTEGRATION: return exporter.finetune.start_job(client, export_dir, base_model, method,
    #                                                 suffix, seed, hyperparameters)
    spec = JobSpec(base_model, "dpo" if method == "dpo" else "supervised",
                   dict(hyperparameters), suffix, seed)
    return OpenAIFineTuning().start(load_export(export_dir), spec).id


def wait_for_job(client: AdminClient, job_id: str, *, poll_s: float = 30.0,
                 timeout_s: float | None = None) -> dict[str, Any]:
    """The job once it ends (status succeeded/failed/cancelled, fine_tuned_model, error), or
    as it is when `timeout_s` runs out first."""
    # INTEGRATION: exporter.finetune.wait_for_job(client, job_id) (keep the timeout: the
    # cycle stops waiting after it, and the next run resumes on the same job).
    provider = OpenAIFineTuning()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            job = provider.retrieve(job_id)
        except TransientProviderError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            time.sleep(poll_s)
            continue
        if job.done or (deadline is not None and time.monotonic() >= deadline):
            return {"id": job.id, "status": job.status, "fine_tuned_model": job.fine_tuned_model,
                    "error": dict(job.error) if job.error else None}
        time.sleep(poll_s if deadline is None else
                   max(0.0, min(poll_s, deadline - time.monotonic())))
