"""The Datasets and Jobs pages with Streamlit's AppTest against a real proxy on loopback: the
app builds a dataset into its own export root through the admin API, shows the validation
report and the recorded snapshots; the Jobs page shows recorded jobs, events and curves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REVIEWER_TOKEN, ProxyServer
from tests.test_review_api import logged

APP = str(Path(__file__).resolve().parent.parent / "curation_ui" / "app.py")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "ui" / "tuneloop.duckdb.exports"


@pytest.fixture
def page(proxy: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Callable[[str], AppTest]]:
    monkeypatch.setenv("TUNELOOP_API", proxy.url)
    monkeypatch.setenv("TUNELOOP_REVIEWER_TOKEN", REVIEWER_TOKEN)
    monkeypatch.setenv("TUNELOOP_UI_PASSWORD", PASSWORD)
    monkeypatch.setenv("TUNELOOP_DB", str(tmp_path / "ui" / "tuneloop.duckdb"))
    monkeypatch.setenv("TUNELOOP_UI_COOKIE_SECRET", "test-cookie-secret-0123456789")
    monkeypatch.delenv("TUNELOOP_ADMIN_TOKEN", raising=False)
    st.cache_resource.clear()

    def open_page(path: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.text_input[0].input("ann")
        at.text_input[1].input(PASSWORD)
        at.button[0].click().run()
        at.switch_page(path).run()
        assert not at.exception, at.exception
        return at

    yield open_page
    st.cache_resource.clear()


def widget(elements: Any, label: str) -> Any:
    found = [e for e in elements if e.label == label]
    assert found, f"no {label!r} among {[e.label for e in elements]}"
    return found[0]


def build(at: AppTest, name: str, validation: float = 0.2) -> AppTest:
    widget(at.text_input, "Name").input(name)
    widget(at.number_input, "Validation fraction").set_value(validation)
    widget(at.button, "Build dataset").click().run()
    assert not at.exception, at.exception
    return at


def test_build_a_dataset_see_its_report_and_snapshots(page: Callable[[str], AppTest],
                                                      proxy: ProxyServer, root: Path) -> None:
    ids = logged(proxy, *[f"Which plan fits a team of {i}?" for i in range(14)])
    reviewer = proxy.admin(REVIEWER_TOKEN)
    reviewer.bulk_review("approve", reviewer="ann", ids=ids[:12])
    original = reviewer.interaction(ids[0])["original"]
    reviewer.review(ids[0], "edit", reviewer="ann", expected_revision=1,
                    messages=[*original[:-1], {"role": "assistant", "content": "Team plan."}])
    at = build(page("views/datasets.py"), "plans")
    assert [s.value for s in at.success] == ["Recorded plans version 1\\."]
    report = at.code[0].value
    assert report.startswith("Dataset check: chat") and report.rstrip().endswith("OK")
    (built,) = list((root / "plans").iterdir())
    lines = [json.loads(x) for x in (built / "train.jsonl").read_text().splitlines()]
    lines += [json.loads(x) for x in (built / "validation.jsonl").read_text().splitlines()]
    edited = [*original[:-1], {"role": "assistant", "content": "Team plan."}]
    assert len(lines) == 12 and {"messages": edited} in lines
    versions = reviewer.dataset_versions("plans")["versions"]
    assert [v["path"] for v in versions] == [str(built)]
    assert versions[0]["created_by"] == "ann"  # the signed-in reviewer
    downloads = [e for e in at.get("download_button")]
    assert len(downloads) == 6  # train, validation, manifest: just built, and the version

    at = build(at, "plans")  # a second build is version 2, listed with the first
    assert [s.value for s in at.success] == ["Recorded plans version 2\\."]
    assert list(at.dataframe[1].value["version"]) == [2, 1]


@pytest.mark.parametrize("name", ["../../etc", "/tmp/x", "a/b", "trace"])
def test_a_bad_name_is_refused_and_nothing_is_written(page: Callable[[str], AppTest],
                                                      proxy: ProxyServer, root: Path,
                                                      tmp_path: Path, name: str) -> None:
    ids = logged(proxy, *[f"question {i}" for i in range(11)])
    proxy.admin().bulk_review("approve", reviewer="ann", ids=ids)
    before = sorted(p for p in tmp_path.rglob("*") if "ui" in p.parts)
    at = build(page("views/datasets.py"), name)
    assert any("dataset name" in e.value or "reserved" in e.value for e in at.error)
    assert sorted(p for p in tmp_path.rglob("*") if "ui" in p.parts) == before
    assert proxy.admin().datasets()["datasets"] == []


def test_a_failing_dataset_shows_its_report(page: Callable[[str], AppTest], proxy: ProxyServer,
                                            root: Path) -> None:
    ids = logged(proxy, "only", "three", "items")
    proxy.admin().bulk_review("approve", reviewer="ann", ids=ids)
    at = build(page("views/datasets.py"), "tiny")
    assert [e.value for e in at.error] == [
        "The dataset fails validation; nothing was written\\."]
    assert "too_few_examples" in at.code[0].value
    assert not root.exists() or not any(root.rglob("*.jsonl"))
    assert [i.value for i in at.info] == ["No dataset has been recorded yet."]


def test_jobs_page_shows_status_events_and_loss_curves(page: Callable[[str], AppTest],
                                                        proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.record_job({"id": "ftjob-abc", "provider": "openai", "base_model": "gpt-4o-mini",
                      "method": "supervised", "status": "running"})
    admin.record_job({"id": "ftjob-bad", "provider": "openai", "base_model": "gpt-4o-mini",
                      "method": "supervised", "status": "failed"})
    admin.update_job("ftjob-bad", error={"message": "<b>training failed</b>"})
    events = [{"id": f"ev-{i}", "created_at": 1_700_000_000 + i, "level": "info",
               "message": f"Step {i}/3: training loss=0.{9 - i}", "type": "metrics",
               "data": {"step": i}} for i in range(1, 4)]
    admin.update_job("ftjob-abc", events=events)
    admin.update_job("ftjob-abc", status="succeeded", fine_tuned_model="ft:gpt-4o-mini:x::1",
                     curves={"steps": [1, 2, 3], "train_loss": [0.9, 0.6, 0.4],
                             "valid_loss": [None, 0.7, 0.5], "columns": {}})
    at = page("views/jobs.py")
    jobs = at.dataframe[0].value
    assert set(jobs["id"]) == {"ftjob-abc", "ftjob-bad"}
    widget(at.selectbox, "Job").set_value("ftjob-abc").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == ["succeeded"]
    assert list(at.dataframe[1].value["message"]) == [e["message"] for e in events]
    assert len(at.get("vega_lite_chart")) == 1  # the loss curves
    widget(at.selectbox, "Job").set_value("ftjob-bad").run()
    assert [e.value for e in at.error] == ["\\<b\\>training failed\\</b\\>"]  # text, not HTML
