"""Whether a cycle's fresh export holds the same data as before, so the run writes nothing.

The cycle exports without recording first; when the training and validation files are
byte-for-byte those of an earlier run that trained a model (the run ends `unchanged`) or of
the dataset's latest recorded version (the run goes on with that version's directory), the
fresh directory is removed and no dataset version is recorded: an unchanged cycle leaves no
trace but its run record, which says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.exportdir import TRAIN_FILE, VALIDATION_FILE
from tuneloop.client import AdminClient
from tuneloop.errors import NotFound

RUNS_LOOKED_AT = 100


@dataclass(frozen=True)
class SameData:
    message: str
    trained_by: str | None = None  # an earlier run that trained a model on this data
    version: Mapping[str, Any] | None = None  # else the latest recorded version holding it


def data_key(manifest: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The sha256 of the training and validation files: what "the same data" means."""
    files = manifest.get("files") or {}
    return ((files.get(TRAIN_FILE) or {}).get("sha256"),
            (files.get(VALIDATION_FILE) or {}).get("sha256"))


def same_data(client: AdminClient, cycle: str, dataset: str, manifest: Mapping[str, Any],
              run_id: str) -> SameData | None:
    train, validation = data_key(manifest)
    for run in client.cycle_runs(cycle, limit=RUNS_LOOKED_AT):
        state = run.get("state") or {}
        if run["id"] != run_id and state.get("fine_tuned_model") \
                and state.get("train_sha256") == train:
            return SameData(f"the data has not changed since run {run['id']}, which trained "
                            f"{state['fine_tuned_model']} on it: no new dataset version or "
                            "export directory written, nothing to train", trained_by=run["id"])
    try:
        versions = client.dataset_versions(dataset).get("versions") or []
    except NotFound:
        return None
    latest = versions[0] if versions else None
    if latest is None or data_key(latest.get("manifest") or {}) != (train, validation) \
            or not latest.get("path") or not Path(latest["path"]).is_dir():
        return None
    return SameData(f"the data has not changed since dataset {dataset} version "
                    f"{latest['version']}: no new version or export directory written; "
                    f"going on with {latest['path']}", version=latest)
