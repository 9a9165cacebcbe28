"""Whether a cycle's fresh export holds data it already trained on, so the run writes nothing
or picks up the model it already paid for.

"The same training" is the same training and validation files (byte for byte: their sha256)
AND the same training settings (`[finetune]` provider, base_model, method, suffix, seed and
hyperparameters). The newest earlier run of the cycle that started a job on the same training
decides what a new run does:
- it reached a decision (`promoted`, `not_promoted`, `rolled_back`, `superseded`): the run
  ends `unchanged`, nothing to train, except where the model was never found worse
  (`rejudged`): after `not_promoted`, when the gate (`[evaluate]`, or the text of its rubric
  file) changed since, the run evaluates that model again, as a repeated test on the same
  validation examples: the R-th gate of one model is at Bonferroni's level for R tests (else
  a user could adjust the gate until the model passes); after a canary rolled back
  *undecided* at `max_hours`, the run opens its canary again (evaluating it first when
  `[evaluate]` changed), once per data and settings (`[evaluate]` and `[canary]`, less how
  often and how fast: `NOT_JUDGEMENT`): a
  re-opened canary that expires undecided again ends later runs `unchanged` until the data
  or the settings change (no churn);
- it failed after starting its job (a step kept failing: the evaluation, the checkpoints, the
  canary, or following the job): the run resumes from that job (`resume_from`): it follows
  the job if it has no model yet, else evaluates the trained model (its checkpoints first
  with `[evaluate] checkpoints`); never a second job for the same training, never stranded;
- its job failed (`job_failed`): the run trains again.
`tuneloop cycle --force` trains again whatever earlier runs did.

Otherwise, when the files are those of the dataset's latest recorded version, the run goes on
with that version's directory. Either way the fresh export directory is removed and no dataset
version is recorded: an unchanged cycle leaves no trace but its run record, which says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exporter.exportdir import TRAIN_FILE, VALIDATION_FILE, load_export
from exporter.judge import configured_rubric_digest
from tuneloop.client import AdminClient
from tuneloop.errors import NotFound, TuneloopError

RUNS_LOOKED_AT = 100
DECIDED = frozenset({"promoted", "not_promoted", "rolled_back", "superseded"})
TRAINING_SETTINGS = ("provider", "base_model", "method", "suffix", "seed", "hyperparameters")
RESUMED_STATE = ("job_id", "fine_tuned_model", "serving", "estimated_cost_usd")


JUDGEMENT_SECTIONS = ("evaluate", "canary")
NOT_JUDGEMENT = {"evaluate": frozenset({"concurrency", "retries", "api_key_env"}),
                 "canary": frozenset({"watch_seconds"})}
"""Settings of those sections that change how fast or through what a model is judged, not
the judgement: changing them judges nothing again."""


@dataclass(frozen=True)
class SameData:
    message: str
    trained_by: str | None = None  # an earlier run decided on this training: nothing to do
    resume_from: Mapping[str, Any] | None = None  # an earlier run whose job to pick up
    path: str | None = None  # a directory holding these files (the fresh one is removed)
    manifest: Mapping[str, Any] | None = None  # that directory's manifest
    start: str | None = None  # a decided run's model judged again: the step to start at


def data_key(manifest: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The sha256 of the training and validation files: what "the same data" means."""
    files = manifest.get("files") or {}
    return ((files.get(TRAIN_FILE) or {}).get("sha256"),
            (files.get(VALIDATION_FILE) or {}).get("sha256"))


def training_key(finetune: Mapping[str, Any]) -> str:
    """A digest of the `[finetune]` settings that change the model a job trains."""
    chosen = {name: finetune.get(name) for name in TRAINING_SETTINGS}
    return hashlib.sha256(orjson.dumps(chosen, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _same_training(run: Mapping[str, Any], key: tuple[str | None, str | None],
                   settings: str) -> bool:
    state = run.get("state") or {}
    if not state.get("job_id") or state.get("train_sha256") != key[0]:
        return False
    if state.get("validation_sha256", key[1]) != key[1]:  # runs from before it was kept
        return False
    finetune = (run.get("config") or {}).get("finetune")
    return finetune is None or training_key(finetune) == settings


def last_training(client: AdminClient, cycle: str, key: tuple[str | None, str | None],
                  settings: str, run_id: str) -> Mapping[str, Any] | None:
    """The newest other run of `cycle` that started a job on this data with these settings."""
    for run in client.cycle_runs(cycle, limit=RUNS_LOOKED_AT):
        if run["id"] != run_id and _same_training(run, key, settings):
            return run
    return None


def decided(run: Mapping[str, Any]) -> bool:
    return run.get("outcome") in DECIDED


def resumable(run: Mapping[str, Any]) -> bool:
    return run.get("status") == "failed" and run.get("outcome") == "failed"


def resumed(run: Mapping[str, Any], checkpoints: bool) -> tuple[str, dict[str, Any]]:
    """Where a run picking up `run`'s job starts, and the state it takes over: following the
    job when it had no model yet, else (re-)choosing among its checkpoints or evaluating."""
    state = run.get("state") or {}
    taken = {name: state[name] for name in RESUMED_STATE if name in state}
    taken["resumed_from"] = run["id"]
    if not state.get("fine_tuned_model"):
        return "wait", taken
    taken["fine_tuned_model"] = state.get("final_model") or state["fine_tuned_model"]
    return ("checkpoints" if checkpoints else "evaluate"), taken


def judgement(config: Mapping[str, Any], sections: tuple[str, ...] = JUDGEMENT_SECTIONS
              ) -> dict[str, Any]:
    """The settings of a run's config that decide how a model is judged: `[evaluate]`'s
    (the gate) and `[canary]`'s, less `NOT_JUDGEMENT`."""
    return {name: {key: value for key, value in (config.get(name) or {}).items()
                   if key not in NOT_JUDGEMENT[name]} for name in sections}


def rejudged(run: Mapping[str, Any], now: Mapping[str, Any], checkpoints: bool
             ) -> tuple[str, str] | None:
    """Where a new run on `run`'s training judges its model again, and why, or None (then
    `unchanged`): the model was never found worse (not promoted by a gate since changed, or
    its canary rolled back undecided at max_hours) and this is the first time for these
    settings. `now`: the new run's config."""
    state = run.get("state") or {}
    model = state.get("fine_tuned_model")
    if not model:
        return None
    before = run.get("config")  # None: a run from before configs were kept, not a change
    # the config names the rubric's file: its text is what judges (kept by the run)
    rubric = configured_rubric_digest(now.get("evaluate") or {})
    rubric_edited = rubric is not None and state.get("rubric_sha256") not in (None, rubric)
    changed = rubric_edited or (before is not None and judgement(before) != judgement(now))
    gate_changed = rubric_edited or (before is not None and judgement(before, ("evaluate",))
                                     != judgement(now, ("evaluate",)))
    # not promoted by the gate: only the gate's settings can change that
    if run.get("outcome") == "not_promoted" and gate_changed:
        tests = int(state.get("repeated_tests") or 1) + 1
        return (("checkpoints" if checkpoints else "evaluate"),
                f"[evaluate]{' (the rubric file)' if rubric_edited else ''} changed since run "
                f"{run['id']} ended not_promoted: evaluating its model {model} again, not "
                f"training again; a repeated test on the same validation examples (gate "
                f"number {tests} of this model), so its intervals are at Bonferroni's level "
                f"for {tests} tests")
    if run.get("outcome") == "rolled_back" and state.get("rolled_back_undecided") \
            and (changed or not state.get("reopened_from")):
        step = ("checkpoints" if checkpoints else "evaluate") if gate_changed else "canary"
        return (step, f"run {run['id']}'s canary of {model} was rolled back undecided at "
                      "max_hours (never found worse): opening its canary again, once for this "
                      "data and these settings, not training again")
    return None


def _directory(path: Any, key: tuple[str | None, str | None]) -> Mapping[str, Any] | None:
    """The manifest of the export at `path` when it is there and holds these files."""
    if not isinstance(path, str) or not Path(path).is_dir():
        return None
    try:
        manifest = load_export(Path(path), verify=False).manifest
    except TuneloopError:
        return None
    return manifest if data_key(manifest) == key else None


def same_data(client: AdminClient, cycle: str, dataset: str, manifest: Mapping[str, Any],
              run_id: str, config: Mapping[str, Any], *, force: bool = False
              ) -> SameData | None:
    """`config`: the new run's (JSON) config."""
    key = data_key(manifest)
    finetune = config.get("finetune") or {}
    earlier = None if force else last_training(client, cycle, key, training_key(finetune),
                                               run_id)
    again = None if earlier is None or not decided(earlier) else rejudged(
        earlier, config, bool((config.get("evaluate") or {}).get("checkpoints")))
    if earlier is not None and again is not None:
        found = _directory((earlier.get("state") or {}).get("export_path"), key)
        return SameData(again[1], resume_from=earlier, start=again[0],
                        path=earlier["state"]["export_path"] if found else None,
                        manifest=found)
    if earlier is not None and decided(earlier):
        state = earlier.get("state") or {}
        return SameData(f"the data and the training settings have not changed since run "
                        f"{earlier['id']}, which trained {state.get('fine_tuned_model')} on "
                        f"them and ended {earlier['outcome']}: no new dataset version or "
                        "export directory written, nothing to train (--force trains again; a "
                        "changed gate ([evaluate]), or [canary] after an undecided canary, "
                        "judges a model never found worse again)",
                        trained_by=earlier["id"])
    resume = earlier if earlier is not None and resumable(earlier) else None
    if resume is not None:
        found = _directory((resume.get("state") or {}).get("export_path"), key)
        if found is not None:
            return SameData(f"run {resume['id']} started job {resume['state']['job_id']} on "
                            "this data with these settings and failed after it: picking up "
                            "its job, not training again", resume_from=resume,
                            path=resume["state"]["export_path"], manifest=found)
    try:
        versions = client.dataset_versions(dataset).get("versions") or []
    except NotFound:
        versions = []
    latest = versions[0] if versions else None
    found = latest.get("manifest") if latest is not None else None
    if latest is None or found is None or data_key(found) != key \
            or not latest.get("path") or not Path(latest["path"]).is_dir():
        return None if resume is None else SameData(
            f"run {resume['id']} started job {resume['state']['job_id']} on this data with "
            "these settings and failed after it: picking up its job", resume_from=resume)
    return SameData(f"the data has not changed since dataset {dataset} version "
                    f"{latest['version']}: no new version or export directory written; "
                    f"going on with {latest['path']}"
                    + (f"; picking up the job of run {resume['id']}" if resume else ""),
                    resume_from=resume, path=latest["path"], manifest=found)
