"""Datasets: build a snapshot from a filter (the exporter runs here, in the app's process, into
a directory under the app's export root), read its validation report, download its files;
list the recorded snapshots and their versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import streamlit as st

from curation_ui.chat_view import escape_markdown
from curation_ui.session import client, require_reviewer, reviewer, ui_settings
from exporter.datasets import build_dataset, snapshot_dir
from exporter.exportdir import MANIFEST_FILE, TRAIN_FILE, VALIDATION_FILE
from exporter.formats import DEFAULT_SEPARATOR, FORMATS, FormatOptions
from exporter.pipeline import DatasetRejected, ExportOptions
from exporter.report import ValidationReport
from tuneloop.errors import TuneloopError

require_reviewer()

MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024
BUILT = "datasets_built"
REVIEW_STATES = ["approved", "needs_work", "rejected", "pending"]


def _filter(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.strip() if isinstance(v, str) else v for k, v in values.items()
            if v not in (None, "")}


def _options(form: dict[str, Any]) -> ExportOptions:
    labels = tuple(x.strip() for x in form["labels"].split(",") if x.strip()) or None
    return ExportOptions(
        name=form["name"].strip(),
        format=FormatOptions(form["format"], separator=form["separator"] or DEFAULT_SEPARATOR,
                             stop=form["stop"] or None, labels=labels,
                             positive_class=form["positive_class"] or None),
        base_model=form["base_model"].strip(),
        validation_fraction=form["validation"], seed=int(form["seed"]),
        filter=_filter({"review": form["review"], "tag": form["tag"], "model": form["model"],
                        "label_prefix": form["label_prefix"],
                        "label_field": form["label_field"]}),
    )


def build(form: dict[str, Any]) -> None:
    """Export into a fresh directory under the app's root and record the snapshot."""
    st.session_state.pop(BUILT, None)
    try:
        options = _options(form)
        out = snapshot_dir(ui_settings().exports_root, options.name)
        result = build_dataset(client(), out, options, reviewer=reviewer())
    except DatasetRejected as exc:
        st.session_state[BUILT] = {"report": exc.report.to_json(), "path": None,
                                   "error": "The dataset fails validation; nothing was written."}
        return
    except TuneloopError as exc:
        st.session_state[BUILT] = {"report": None, "path": None, "error": exc.message}
        return
    st.session_state[BUILT] = {"report": result.report.to_json(), "path": str(out),
                               "snapshot": result.manifest["snapshot"], "error": None}


def downloads(path: Path, key: str) -> None:
    """Download buttons for an export directory under the app's root (none elsewhere)."""
    root = ui_settings().exports_root.resolve()
    target = path.resolve()
    if not target.is_relative_to(root) or not (target / MANIFEST_FILE).is_file():
        st.caption(escape_markdown(f"The files are not under this app's export root ({root})."))
        return
    for column, name in zip(st.columns(3), (TRAIN_FILE, VALIDATION_FILE, MANIFEST_FILE),
                            strict=True):
        file = target / name
        if not file.is_file() or file.stat().st_size > MAX_DOWNLOAD_BYTES:
            column.caption(escape_markdown(f"{name}: {file}"))
            continue
        column.download_button(f"Download {name}", data=file.read_bytes(), file_name=name,
                               mime="application/json", key=f"{key}-{name}")


def report_text(report: dict[str, Any]) -> None:
    st.code(ValidationReport.from_json(report).render(), language=None)


st.title("Datasets")
with st.form("build_dataset"):
    left, right = st.columns(2)
    form: dict[str, Any] = {
        "name": left.text_input("Name", max_chars=64, help="A-Z a-z 0-9 . _ -"),
        "format": right.selectbox("Format", FORMATS),
        "base_model": left.text_input("Base model", value="gpt-4o-mini-2024-07-18"),
        "validation": right.number_input("Validation fraction", 0.0, 0.9, 0.1, step=0.05),
        "review": left.selectbox("Review state", REVIEW_STATES),
        "seed": right.number_input("Seed", min_value=0, value=0, step=1),
        "tag": left.text_input("Tag (optional)", max_chars=64),
        "model": right.text_input("Model (optional)", max_chars=128),
    }
    with st.expander("Legacy and classification"):
        form.update({
            "separator": st.text_input("Prompt separator", value=DEFAULT_SEPARATOR),
            "stop": st.text_input("Stop sequence (legacy default ###)"),
            "labels": st.text_input("Label set, comma-separated"),
            "positive_class": st.text_input("Positive class"),
            "label_prefix": st.text_input("Label tag prefix", value="label:"),
            "label_field": st.text_input("Label metadata field (instead of tags)"),
        })
    if st.form_submit_button("Build dataset", type="primary"):
        with st.spinner("Exporting and validating…"):
            build(form)

built = st.session_state.get(BUILT)
if built:
    if built["error"]:
        st.error(escape_markdown(built["error"]))
    else:
        snap = built["snapshot"]
        st.success(escape_markdown(f"Recorded {snap['name']} version {snap['version']}."))
    if built["report"]:
        report_text(built["report"])
    if built["path"]:
        downloads(Path(built["path"]), "built")

st.header("Snapshots")
try:
    names = client().datasets()["datasets"]
except TuneloopError as exc:
    st.error(escape_markdown(f"The admin API did not answer: {exc.message}"))
    st.stop()
if not names:
    st.info("No dataset has been recorded yet.")
    st.stop()
st.dataframe(pd.DataFrame(names), hide_index=True)
chosen = st.selectbox("Dataset", [n["name"] for n in names], key="datasets_name")
versions = client().dataset_versions(chosen)["versions"]
table = pd.DataFrame([{"version": v["version"], "format": v["format"],
                       "train": v["counts"].get("train", 0),
                       "validation": v["counts"].get("validation", 0),
                       "skipped": v["counts"].get("skipped", 0), "created": v["created_at"],
                       "by": v["created_by"], "id": v["id"]} for v in versions])
st.dataframe(table, hide_index=True)
version = st.selectbox("Version", [v["version"] for v in versions], key="datasets_version")
detail = client().dataset(chosen, int(version))
st.caption(escape_markdown(f"filter: {orjson.dumps(detail['filter']).decode()}"))
if detail.get("report"):
    report_text(detail["report"])
if detail.get("path"):
    downloads(Path(detail["path"]), f"v{version}")
