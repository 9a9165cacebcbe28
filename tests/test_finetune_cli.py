"""`tuneloop finetune` and `tuneloop jobs` against a real proxy (the record) and the fake
OpenAI fine-tuning API on loopback (the provider, with its real job state machine)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import Result

from exporter.datasets import build_dataset
from exporter.exportdir import load_export
from exporter.finetune import estimated_cost, job_spec, start_job, wait_for_job
from exporter.pipeline import ExportOptions
from exporter.providers.base import JobEvent, JobInfo
from exporter.providers.follow import Backoff
from exporter.providers.openai_ft import OpenAIFineTuning
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer, both_stores
from tests.test_export_cli import flat, run_cli
from tests.test_review_api import logged

pytestmark = both_stores

MODEL = "gpt-4o-mini-2024-07-18"
EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d (.+)$")
FAST = Backoff(poll=0.02, idle_max=0.05, initial=0.02, maximum=0.1, give_up_after=10)


@pytest.fixture
def export_dir(proxy: ProxyServer, tmp_path: Path) -> Path:
    ids = logged(proxy, *[f"Where is my parcel number {i}?" for i in range(14)])
    proxy.admin(REVIEWER_TOKEN).bulk_review("approve", reviewer="ann", ids=ids)
    out = tmp_path / "exports" / "support-v1"
    build_dataset(proxy.admin(REVIEWER_TOKEN), out,
                  ExportOptions(name="support", validation_fraction=0.2, workers=1))
    return out


@pytest.fixture
def cli(proxy: ProxyServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """The CLI with the provider at the fake OpenAI (OPENAI_BASE_URL, as users set it)."""
    monkeypatch.setenv("COLUMNS", "200")
    provider = {"OPENAI_BASE_URL": proxy.upstream.base_url, "OPENAI_API_KEY": "sk-test"}

    def invoke(*args: str, token: str = ADMIN_TOKEN) -> Result:
        return run_cli(proxy, tmp_path, *args, token=token, **provider)

    return invoke


def provider_calls(proxy: ProxyServer) -> list[str]:
    return [r.path for r in proxy.upstream.state.requests
            if r.path.startswith(("/v1/files", "/v1/fine_tuning"))]


def shown_events(output: str) -> list[str]:
    return [m.group(1) for line in output.splitlines() if (m := EVENT_LINE.match(line))]


def test_the_reviewer_token_cannot_fine_tune(proxy: ProxyServer, export_dir: Path,
                                             cli: Callable[..., Result]) -> None:
    result = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL,
                 token=REVIEWER_TOKEN)
    assert result.exit_code == 3, result.output
    assert "needs the admin token" in flat(result.output)
    assert provider_calls(proxy) == []  # refused before any upload
    assert proxy.admin().jobs()["jobs"] == []
    job = proxy.admin(REVIEWER_TOKEN)
    with pytest.raises(Exception, match="admin token"):
        job.record_job({"id": "ftjob-x", "provider": "openai", "base_model": MODEL,
                        "method": "supervised", "status": "queued"})


def test_finetune_wait_succeeds_and_records_job_events_and_curves(
        proxy: ProxyServer, export_dir: Path, cli: Callable[..., Result]) -> None:
    proxy.upstream.state.finetune_step_seconds = 0.03
    result = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL,
                 "--suffix", "support", "--epochs", "2", "--seed", "7", "--wait",
                 "--poll", "0.02")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.splitlines()[0]
    fake = proxy.upstream.state.jobs[job_id]
    assert fake.status == "succeeded" and fake.hyperparameters["n_epochs"] == 2
    assert fake.seed == 7 and fake.suffix == "support"
    uploaded = proxy.upstream.state.files.get(fake.training_file)
    assert uploaded and uploaded.content == (export_dir / "train.jsonl").read_bytes()

    record = proxy.admin(REVIEWER_TOKEN).job(job_id)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert record["status"] == "succeeded" and record["dataset_id"] == manifest["snapshot"]["id"]
    assert record["fine_tuned_model"] == fake.fine_tuned_model
    assert record["fine_tuned_model"].startswith(f"ft:{MODEL}:tuneloop-fake:support:")
    assert record["method"] == "supervised" and record["spec"]["suffix"] == "support"
    assert record["finished_at"] and record["last_event_id"] == fake.events[-1]["id"]
    # what training cost, for `tuneloop savings`' break-even: all epochs at $3.00 per 1M
    assert record["trained_tokens"] == fake.tokens * 2 > 0
    assert record["training_cost_usd"] == pytest.approx(fake.tokens * 2 * 3.00 / 1e6)
    assert record["curves"]["steps"] == list(range(1, 11))
    assert record["curves"]["valid_loss"][-1] == pytest.approx(2.0 / 11 + 0.15, abs=1e-4)
    events = proxy.admin(REVIEWER_TOKEN).job_events(job_id)["events"]
    assert [e["id"] for e in events] == [e["id"] for e in fake.events]
    assert shown_events(result.output) == [e["message"] for e in fake.events]
    assert "10 steps; final training loss" in result.stdout

    listed = cli("jobs", "list")
    assert job_id in listed.stdout and "succeeded" in listed.stdout
    results = cli("jobs", "results", job_id)
    assert results.exit_code == 0, results.output
    assert "final validation loss" in results.stdout and "best validation loss" in results.stdout


def test_a_failed_job_ends_failed(proxy: ProxyServer, export_dir: Path,
                                  cli: Callable[..., Result]) -> None:
    proxy.upstream.state.finetune_step_seconds = 0.03
    result = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL,
                 "--suffix", "fail", "--wait", "--poll", "0.02")
    assert result.exit_code == 8, result.output
    job_id = result.stdout.splitlines()[0]
    assert "failed: Fine-tuning failed during training." in flat(result.output)
    record = proxy.admin().job(job_id)
    assert record["status"] == "failed" and record["fine_tuned_model"] is None
    assert record["error"]["code"] == "training_failed" and record["curves"] is None
    again = cli("jobs", "follow", job_id, "--poll", "0.02")  # nothing new, same verdict
    assert again.exit_code == 8 and shown_events(again.output) == []


def test_cancel_works(proxy: ProxyServer, export_dir: Path, cli: Callable[..., Result]) -> None:
    proxy.upstream.state.finetune_step_seconds = 30  # it stays validating
    started = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL)
    assert started.exit_code == 0, started.output
    job_id = started.stdout.splitlines()[0]
    assert proxy.admin().job(job_id)["status"] == "validating_files"
    reviewer = cli("jobs", "cancel", job_id, token=REVIEWER_TOKEN)
    assert reviewer.exit_code == 3 and proxy.upstream.state.jobs[job_id].status != "cancelled"
    cancelled = cli("jobs", "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert proxy.upstream.state.jobs[job_id].status == "cancelled"
    assert proxy.admin().job(job_id)["status"] == "cancelled"
    followed = cli("jobs", "follow", job_id, "--poll", "0.02")
    assert followed.exit_code == 8 and "cancelled" in flat(followed.output)
    assert "Fine-tuning job cancelled" in shown_events(followed.output)
    unknown = cli("jobs", "cancel", "ftjob-nope")
    assert unknown.exit_code == 4


def test_a_preference_export_refuses_sft_before_uploading(
        proxy: ProxyServer, tmp_path: Path, cli: Callable[..., Result]) -> None:
    ids = logged(proxy, *[f"refund for order {i}?" for i in range(12)])
    reviewer = proxy.admin(REVIEWER_TOKEN)
    for interaction_id in ids:
        original = reviewer.interaction(interaction_id)["original"]
        reviewer.review(interaction_id, "edit", reviewer="ann", expected_revision=0,
                        messages=[*original[:-1], {"role": "assistant", "content": "Yes."}])
    out = tmp_path / "pref"
    build_dataset(reviewer, out, ExportOptions(name="prefs", validation_fraction=0,
                                               workers=1, format=_preference()))
    result = cli("finetune", "--dataset", str(out), "--base-model", MODEL, "--method", "sft")
    assert result.exit_code == 2 and "trains with method 'dpo'" in flat(result.output)
    assert provider_calls(proxy) == []


def _preference() -> Any:
    from exporter.formats import FormatOptions

    return FormatOptions("preference")


class StopAfter:
    """A display that is interrupted (Ctrl+C) when it is about to show its N+1-th event."""

    def __init__(self, events: int) -> None:
        self.left = events
        self.shown: list[str] = []

    def event(self, event: JobEvent) -> None:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        self.shown.append(event.id)

    def status(self, job: JobInfo) -> None:
        pass

    def connection_lost(self, error: Exception, retry_in: float) -> None:
        pass


def test_wait_for_job_resumes_after_the_last_event_shown(proxy: ProxyServer,
                                                         export_dir: Path) -> None:
    proxy.upstream.state.finetune_step_seconds = 0.03
    provider = OpenAIFineTuning(openai.OpenAI(base_url=proxy.upstream.base_url,
                                              api_key="sk-test", max_retries=0))
    client = proxy.admin()
    job = start_job(client, export_dir, job_spec(load_export(export_dir), MODEL), provider)
    first = StopAfter(3)
    with pytest.raises(KeyboardInterrupt):
        wait_for_job(client, job["id"], provider, observer=first, backoff=FAST)
    assert client.job(job["id"])["last_event_id"] == first.shown[-1]
    second = StopAfter(10_000)
    done = wait_for_job(client, job["id"], provider, observer=second, backoff=FAST)
    fake = proxy.upstream.state.jobs[job["id"]]
    assert first.shown + second.shown == [e["id"] for e in fake.events]
    assert done["status"] == "succeeded" and done["curves"]["steps"]


FOLLOWER = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from tuneloop.cli import main; sys.argv[0] = 'tuneloop'; main()")


def test_jobs_follow_reattaches_after_an_interruption(proxy: ProxyServer, export_dir: Path,
                                                      cli: Callable[..., Result]) -> None:
    state = proxy.upstream.state
    state.finetune_step_seconds = 1000  # held until the follower is attached
    started = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL)
    job_id = started.stdout.splitlines()[0]
    env = {**os.environ, "TUNELOOP_API": proxy.url, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
           "OPENAI_BASE_URL": proxy.upstream.base_url, "OPENAI_API_KEY": "sk-test",
           "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    # Ctrl+C as a terminal sends it: Python's own SIGINT handler, whatever the test process
    # inherited (an ignored SIGINT is inherited across exec: in the full suite the follower
    # ignored it, ran on to the end or hung on a held job)
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, "--db", str(export_dir.parent / "x.duckdb"),
         "jobs", "follow", job_id, "--poll", "0.05"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stderr is not None
    first: list[str] = []
    deadline = time.monotonic() + 60
    while len(first) < 3 and time.monotonic() < deadline:
        line = follower.stderr.readline()
        if match := EVENT_LINE.match(line.strip()):
            first.append(match.group(1))
        if len(first) == 2 and state.finetune_step_seconds == 1000:  # attached: let it run
            state.jobs[job_id].created = state.clock()
            # slow steps: on a loaded machine (CI at load 10-15) a job at 0.25 s a step was
            # done before the Ctrl+C below
            state.finetune_step_seconds = 1.5
    follower.send_signal(signal.SIGINT)  # the connection is gone: Ctrl+C mid-job
    _, rest = follower.communicate(timeout=120)  # a liveness bound
    assert follower.returncode == 130, rest
    first += shown_events(rest)
    assert "Re-attach with" in " ".join(rest.split())
    assert proxy.upstream.state.jobs[job_id].status not in ("succeeded", "failed")

    again = cli("jobs", "follow", job_id, "--poll", "0.05")
    assert again.exit_code == 0, again.output
    fake = proxy.upstream.state.jobs[job_id]
    assert first + shown_events(again.output) == [e["message"] for e in fake.events]
    assert proxy.admin().job(job_id)["status"] == "succeeded"


def test_jobs_list_refresh_skips_a_provider_without_its_key_and_refreshes_the_rest(
        proxy: ProxyServer, export_dir: Path, cli: Callable[..., Result]) -> None:
    proxy.upstream.state.finetune_step_seconds = 0.02
    started = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL)
    openai_job = started.stdout.splitlines()[0]
    proxy.admin().record_job({"id": "ft-together-1", "provider": "together",
                              "base_model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
                              "method": "sft", "status": "running", "dataset_id": None,
                              "spec": {}})
    time.sleep(0.3)  # the OpenAI job finishes while nobody follows
    listed = cli("jobs", "list", "--refresh", "--json")  # no TOGETHER_API_KEY here
    assert listed.exit_code == 0, listed.output
    jobs = {job["id"]: job for job in json.loads(listed.stdout)}
    assert jobs[openai_job]["status"] == "succeeded"  # refreshed despite the other provider
    assert jobs["ft-together-1"]["status"] == "running"  # as recorded
    said = flat(listed.stderr)
    assert "skipped together (1 unfinished job: ft-together-1" in said
    assert "TOGETHER_API_KEY" in said


def test_jobs_list_refresh_asks_the_provider_and_the_cost_follows_the_epochs(
        proxy: ProxyServer, export_dir: Path, cli: Callable[..., Result]) -> None:
    proxy.upstream.state.finetune_step_seconds = 0.02
    started = cli("finetune", "--dataset", str(export_dir), "--base-model", MODEL)
    job_id = started.stdout.splitlines()[0]
    assert proxy.admin().job(job_id)["status"] == "validating_files"
    time.sleep(0.3)  # the provider finishes it while nobody follows
    listed = cli("jobs", "list", "--refresh", "--json")
    assert listed.exit_code == 0, listed.output
    (job,) = json.loads(listed.stdout)
    assert job["id"] == job_id and job["status"] == "succeeded" and job["fine_tuned_model"]
    assert proxy.admin().job(job_id)["status"] == "succeeded"

    export = load_export(export_dir)
    billing = export.manifest["billing"]
    default = estimated_cost(export.manifest, job_spec(export, MODEL))
    assert default == billing["estimated_cost_usd"]
    doubled = estimated_cost(export.manifest, job_spec(export, MODEL,
                                                       epochs=2 * billing["default_epochs"]))
    assert doubled == pytest.approx(2 * default, rel=1e-3)
