"""The cycle's seam to the dataset and fine-tuning functions.

`tuneloop cycle` calls only these functions for its export, fine-tune and wait steps;
they delegate to `exporter.datasets` (which records the snapshot) and `exporter.finetune`
(which records the job, its events and loss curves), keeping the cycle's own contract: a wait
that gives up after `timeout_s`, so a cron run never blocks for the whole training and the
next run resumes on the same job.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter import datasets, finetune
from exporter.exportdir import load_export
from exporter.pipeline import ExportOptions, ExportResult
from tuneloop.client import AdminClient

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def build_dataset(client: AdminClient, name: str, options: ExportOptions,
                  filter: Mapping[str, Any], out: Path, *, record: bool = True) -> ExportResult:
    """Export the examples `filter` selects (default: approved production traffic) to `out`
    and record the snapshot (unless `record` is off: then `record_dataset` does it). The
    result has `.path` and `.manifest` (billing estimate)."""
    chosen = dataclasses.replace(options, name=name, filter={**options.filter, **filter},
                                 overwrite=True)
    return datasets.build_dataset(client, out, chosen, record=record)


def record_dataset(client: AdminClient, result: ExportResult) -> ExportResult:
    """Record an export built with `record=False` as the dataset's next version."""
    return datasets.record_export(client, result)


def start_job(client: AdminClient, export_dir: Path, base_model: str, method: str,
              suffix: str | None, seed: int | None,
              hyperparameters: Mapping[str, Any],
              provider: finetune.JobProvider | None = None) -> str:
    """Upload the export, create the fine-tuning job and record it; its id."""
    spec = finetune.job_spec(
        load_export(export_dir, verify=False), base_model, method=method, suffix=suffix,
        seed=seed, epochs=hyperparameters.get("n_epochs"),
        batch_size=hyperparameters.get("batch_size"),
        lr_multiplier=hyperparameters.get("learning_rate_multiplier"),
        beta=hyperparameters.get("beta"),
    )
    record = finetune.start_job(client, export_dir, spec, provider)
    return str(record["id"])


def wait_for_job(client: AdminClient, job_id: str, *, poll_s: float = 30.0,
                 timeout_s: float | None = None,
                 provider: finetune.JobProvider | None = None) -> dict[str, Any]:
    """The recorded job once it ends (with its events and loss curves recorded), or as it is
    when `timeout_s` runs out first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        record = finetune.refresh_job(client, job_id, provider)
        if record["status"] in TERMINAL:
            return finetune.wait_for_job(client, job_id, provider)
        if deadline is not None and time.monotonic() >= deadline:
            return record
        remaining = poll_s if deadline is None else max(0.0, deadline - time.monotonic())
        time.sleep(min(poll_s, remaining))


def serve(client: AdminClient, provider: finetune.JobProvider, job_id: str
          ) -> tuple[dict[str, Any], list[str]]:
    """Make a succeeded job's model reachable through the proxy: a provider whose models live
    at another server (Together, Fireworks) deploys it, and the model gets a route of its own
    name to that server, so evaluation and the canary reach it by name. Returns the route
    target's `provider`, `base_url` and `api_key_env` ({} for OpenAI: the default upstream),
    and the warnings of the route's promotion."""
    deploy = getattr(provider, "deploy", None)
    if provider.name == "openai" or deploy is None:
        return {}, []
    served = deploy(provider.retrieve(job_id))
    args: dict[str, Any] = served.promote_args()
    result = client.promote(served.model, served.model, **args)
    return args, list(result.get("warnings") or [])
