"""The jobs admin API on a real proxy: who may record and change jobs, what a change may
carry, events recorded once with the last event id."""

from __future__ import annotations

import pytest

from tests.conftest import REVIEWER_TOKEN, ProxyServer, both_stores
from tuneloop.errors import BadRequest, Conflict, Forbidden, NotFound

pytestmark = both_stores

JOB = {"id": "ftjob-1", "provider": "openai", "base_model": "gpt-4o-mini",
       "method": "supervised", "status": "validating_files", "spec": {"suffix": "s"}}


def event(i: int) -> dict[str, object]:
    return {"id": f"ftevent-{i}", "created_at": 1_700_000_000 + i, "level": "info",
            "message": f"event {i}", "type": "message", "data": {}}


def test_only_the_admin_token_records_and_changes_jobs(proxy: ProxyServer) -> None:
    reviewer, admin = proxy.admin(REVIEWER_TOKEN), proxy.admin()
    with pytest.raises(Forbidden):
        reviewer.check_job()
    with pytest.raises(Forbidden):
        reviewer.record_job(JOB)
    admin.check_job()
    assert admin.jobs()["jobs"] == []  # a dry run records nothing
    recorded = admin.record_job(JOB)
    assert recorded["status"] == "validating_files" and recorded["spec"] == {"suffix": "s"}
    with pytest.raises(Conflict):
        admin.record_job(JOB)
    with pytest.raises(Forbidden):
        reviewer.update_job("ftjob-1", status="running")
    assert reviewer.job("ftjob-1")["status"] == "validating_files"
    assert [j["id"] for j in reviewer.jobs()["jobs"]] == ["ftjob-1"]
    assert reviewer.jobs(status="running")["jobs"] == []


def test_events_are_recorded_once_with_the_last_event_id(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    admin.record_job(JOB)
    admin.update_job("ftjob-1", events=[event(1), event(2)])
    job = admin.update_job("ftjob-1", events=[event(2), event(3)], status="running")
    assert job["last_event_id"] == "ftevent-3" and job["status"] == "running"
    events = admin.job_events("ftjob-1")["events"]
    assert [(e["seq"], e["id"]) for e in events] == [(1, "ftevent-1"), (2, "ftevent-2"),
                                                     (3, "ftevent-3")]
    assert [e["id"] for e in admin.job_events("ftjob-1", after=2)["events"]] == ["ftevent-3"]
    done = admin.update_job("ftjob-1", status="succeeded", finished_at=1_700_000_100,
                            fine_tuned_model="ft:gpt-4o-mini:x::1",
                            curves={"steps": [1], "train_loss": [0.5]})
    assert done["finished_at"].startswith("2023-11-14T22:15:")
    assert done["curves"]["train_loss"] == [0.5]


@pytest.mark.parametrize("fields, message", [
    ({"status": "Running!"}, "status"),
    ({"colour": "red"}, "unknown job fields"),
    ({"finished_at": "yesterday"}, "finished_at"),
    ({"events": [{"id": "../x"}]}, "events"),
    ({"curves": [1, 2]}, "curves"),
])
def test_bad_changes_are_400_and_change_nothing(proxy: ProxyServer, fields: dict[str, object],
                                                message: str) -> None:
    admin = proxy.admin()
    admin.record_job(JOB)
    with pytest.raises(BadRequest, match=message):
        admin.update_job("ftjob-1", **fields)
    assert admin.job("ftjob-1")["status"] == "validating_files"
    assert admin.job_events("ftjob-1")["events"] == []


def test_unknown_jobs_and_datasets_are_404(proxy: ProxyServer) -> None:
    admin = proxy.admin()
    with pytest.raises(NotFound):
        admin.job("ftjob-nope")
    with pytest.raises(NotFound):
        admin.update_job("ftjob-nope", status="running")
    with pytest.raises(NotFound):
        admin.job_events("ftjob-nope")
    with pytest.raises(NotFound):
        admin.check_job("ds_unknown")
    with pytest.raises(NotFound):
        admin.record_job({**JOB, "dataset_id": "ds_unknown"})
    with pytest.raises(BadRequest, match="job id"):
        admin.record_job({**JOB, "id": "a/b"})
