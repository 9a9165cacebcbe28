"""Dataset snapshots in the store (DuckDB or Postgres): an export's lineage recorded,
versioned, traceable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pytest

from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from storage.datasets import (
    DATASET_ITEMS_SCHEMA,
    create_dataset,
    dataset_items,
    get_dataset,
    list_datasets,
    trace_line,
)
from storage.db import Connection
from storage.finetune_jobs import list_jobs, record_job, update_job
from tests.conftest import both_stores
from tests.store_support import connected
from tuneloop.errors import BadRequest, Conflict, NotFound

pytestmark = both_stores


@pytest.fixture
def con(store: str) -> Iterator[Connection]:
    with connected(store) as connection:
        yield connection


def lineage_table(path: Path) -> pa.Table:
    options = pajson.ParseOptions(explicit_schema=DATASET_ITEMS_SCHEMA)
    return pajson.read_json(path / "lineage.jsonl", parse_options=options)


def test_an_export_is_recorded_and_every_line_traces_back(tmp_path: Path, con: Connection) -> None:
    examples = [
        Example(
            f"ix-{i:03d}",
            [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            revision_id=f"rev-{i}",
            revision=i % 3 + 1,
            original={"role": "assistant", "content": f"a{i}" if i % 4 == 0 else "old"},
        )
        for i in range(40)
    ]
    out = tmp_path / "pref"
    result = export(
        examples, out, ExportOptions(name="support", format=FormatOptions("preference"))
    )
    first = create_dataset(
        con,
        name="support",
        format="preference",
        items=lineage_table(out),
        filter={"review": "approved"},
        manifest=result.manifest,
        path=str(out),
        created_by="admin",
    )
    second = create_dataset(con, name="support", format="preference", items=lineage_table(out))
    assert (first["version"], second["version"]) == (1, 2)

    stored = get_dataset(con, "support", version=1)
    counts = result.manifest["counts"]
    assert stored["counts"] == {
        "train": counts["train"],
        "validation": counts["validation"],
        "skipped": 10,
    }
    assert stored["filter"] == {"review": "approved"} and stored["created_by"] == "admin"
    assert stored["manifest"]["files"] == result.manifest["files"]
    assert get_dataset(con, "support")["version"] == 2
    assert get_dataset(con, first["id"])["version"] == 1
    assert [d["version"] for d in list_datasets(con, "support")] == [2, 1]

    by_id = {e.interaction_id: e for e in examples}
    for split in ("train", "validation"):
        rows = (out / f"{split}.jsonl").read_text().splitlines()
        for number, line in enumerate(rows, start=1):
            traced = trace_line(con, first["id"], split, number)
            source = by_id[traced["interaction_id"]]
            assert traced["revision_id"] == source.revision_id
            assert traced["revision"] == source.revision
            assert (
                json.loads(line)["preferred_output"][0]["content"] == source.messages[-1]["content"]
            )
    skipped = dataset_items(con, first["id"], split="skipped")
    assert [s["interaction_id"] for s in skipped] == [f"ix-{i:03d}" for i in range(0, 40, 4)]
    assert all(s["skipped"] == "not_edited" and s["line"] is None for s in skipped)
    with pytest.raises(NotFound):
        trace_line(con, first["id"], "train", 10_000)
    with pytest.raises(NotFound):
        get_dataset(con, "nope")


def test_bad_items_are_refused_and_leave_nothing(tmp_path: Path, con: Connection) -> None:
    item = {
        "interaction_id": "a",
        "revision_id": None,
        "revision": None,
        "split": "train",
        "line": 1,
        "skipped": None,
    }
    twice = pa.Table.from_pylist([item, item])
    with pytest.raises(BadRequest, match="once"):
        create_dataset(con, name="x", format="chat", items=twice)
    with pytest.raises(BadRequest, match="splits"):
        create_dataset(
            con, name="x", format="chat", items=pa.Table.from_pylist([{**item, "split": "test"}])
        )
    with pytest.raises(BadRequest, match="columns"):
        create_dataset(con, name="x", format="chat", items=pa.table({"interaction_id": ["a"]}))
    assert con.execute("SELECT count(*) FROM datasets").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM dataset_items").fetchall() == [(0,)]


def test_finetune_jobs_are_recorded_and_followed(tmp_path: Path, con: Connection) -> None:
    job = record_job(
        con,
        job_id="ftjob-1",
        provider="openai",
        base_model="gpt-4o-mini",
        method="supervised",
        status="validating_files",
        dataset_id="ds_1",
        spec={"hyperparameters": {"n_epochs": 3}, "suffix": "support"},
    )
    assert job["status"] == "validating_files" and job["spec"]["suffix"] == "support"
    with pytest.raises(Conflict):
        record_job(
            con, job_id="ftjob-1", provider="openai", base_model="m", method="dpo", status="queued"
        )
    update_job(con, "ftjob-1", status="running", last_event_id="ftevent-7")
    curves = {"steps": [1, 2], "train_loss": [1.5, 1.2], "valid_loss": [None, 1.4]}
    done = update_job(
        con, "ftjob-1", status="succeeded", fine_tuned_model="ft:gpt-4o-mini:x", curves=curves
    )
    assert done["last_event_id"] == "ftevent-7" and done["curves"] == curves
    assert [j["id"] for j in list_jobs(con, status="succeeded")] == ["ftjob-1"]
    assert list_jobs(con, status="failed") == []
    with pytest.raises(NotFound):
        update_job(con, "ftjob-2", status="failed")
    with pytest.raises(ValueError):
        update_job(con, "ftjob-1", base_model="other")
