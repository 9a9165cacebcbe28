"""Fine-tuning through the official SDK against the fake OpenAI fine-tuning API on loopback:
upload, create, follow (through a dropped connection), cancel, results."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from rich.console import Console

from exporter.examples import Example
from exporter.exportdir import load_export
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from exporter.providers.base import JobEvent, JobInfo, JobSpec, parse_result_csv
from exporter.providers.display import RichFollowDisplay
from exporter.providers.follow import Backoff, follow
from exporter.providers.openai_ft import OpenAIFineTuning
from tests.conftest import FakeUpstream
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import free_port, serve_app
from tuneloop.errors import DatasetError, NotFound, ProviderError

FAST = Backoff(poll=0.02, idle_max=0.05, initial=0.02, maximum=0.1, give_up_after=10)


def chat_example(i: int, **kw: Any) -> Example:
    messages = [
        {"role": "system", "content": "You answer about orders."},
        {"role": "user", "content": f"Where is order {i}?"},
        {"role": "assistant", "content": f"Order {i} ships today."},
    ]
    return Example(f"ix-{i:03d}", messages, revision_id=f"r{i}", revision=1, **kw)


@pytest.fixture
def chat_export(tmp_path: Path) -> Path:
    export([chat_example(i) for i in range(30)], tmp_path / "chat", ExportOptions(name="support"))
    return tmp_path / "chat"


def provider_for(url: str, **kw: Any) -> OpenAIFineTuning:
    client = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0, timeout=5, **kw)
    return OpenAIFineTuning(client)


class Recorder:
    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.statuses: list[str] = []
        self.drops = 0

    def event(self, event: JobEvent) -> None:
        self.events.append(event)

    def status(self, job: JobInfo) -> None:
        self.statuses.append(job.status)

    def connection_lost(self, error: Exception, retry_in: float) -> None:
        self.drops += 1


def test_supervised_job_end_to_end(fake_openai: FakeUpstream, chat_export: Path) -> None:
    fake_openai.state.finetune_step_seconds = 0.03
    provider = provider_for(fake_openai.base_url)
    spec = JobSpec(
        "gpt-4o-mini-2024-07-18", hyperparameters={"n_epochs": 2}, suffix="support", seed=7
    )
    job = provider.start(load_export(chat_export), spec)
    assert job.status == "validating_files" and job.base_model == "gpt-4o-mini-2024-07-18"

    uploads = [r for r in fake_openai.state.requests if r.path == "/v1/files"]
    assert len(uploads) == 2 and b'name="purpose"\r\n\r\nfine-tune' in uploads[0].body
    stored = fake_openai.state.files.get(job.training_file or "")
    assert stored and stored.content == (chat_export / "train.jsonl").read_bytes()
    validation = fake_openai.state.files.get(job.validation_file or "")
    assert validation and validation.content == (chat_export / "validation.jsonl").read_bytes()
    created = next(r for r in fake_openai.state.requests if r.path == "/v1/fine_tuning/jobs")
    assert created.json["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2}},
    }
    assert created.json["suffix"] == "support" and created.json["seed"] == 7
    assert created.json["metadata"]["tuneloop_dataset"] == "support"

    recorder = Recorder()
    done = follow(provider, job.id, observer=recorder, backoff=FAST)
    assert done.job.status == "succeeded" and recorder.statuses[-1] == "succeeded"
    assert done.job.fine_tuned_model and done.job.fine_tuned_model.startswith(
        "ft:gpt-4o-mini-2024-07-18:tuneloop-fake:support:"
    )
    all_events = fake_openai.state.jobs[job.id].events
    assert [e.id for e in recorder.events] == [e["id"] for e in all_events]  # each once, in order
    assert done.last_event_id == all_events[-1]["id"] and done.events == len(all_events)
    assert recorder.events[-1].message == "The job has successfully completed"

    curves = provider.results(job.id)
    assert curves.steps == list(range(1, 11))
    assert curves.train_loss[0] == pytest.approx(2.0 / 2 + 0.1)
    assert curves.valid_loss[-1] == pytest.approx(round(2.0 / 11 + 0.15, 4))
    assert "train_accuracy" in curves.columns
    assert [j.id for j in provider.list_jobs()] == [job.id]


def test_follow_resumes_from_the_last_seen_event(
    fake_openai: FakeUpstream, chat_export: Path
) -> None:
    fake_openai.state.finetune_step_seconds = 0.03
    provider = provider_for(fake_openai.base_url)
    job = provider.start(load_export(chat_export), JobSpec("gpt-4o-mini"))
    time.sleep(0.15)  # a few events happen while nobody follows
    first = provider.events_after(job.id, None)
    assert first and first[0].message.startswith("Created fine-tuning job")
    # a new process re-attaches with the job id and the last event it had shown
    recorder = Recorder()
    done = follow(
        provider_for(fake_openai.base_url),
        job.id,
        last_event_id=first[-1].id,
        observer=recorder,
        backoff=FAST,
    )
    ids = [e.id for e in first] + [e.id for e in recorder.events]
    assert ids == [e["id"] for e in fake_openai.state.jobs[job.id].events]
    assert done.job.status == "succeeded"


def test_events_page_backwards_with_after(
    fake_openai: FakeUpstream, chat_export: Path
) -> None:
    fake_openai.state.finetune_step_seconds = 0.01
    provider = provider_for(fake_openai.base_url)
    job = provider.start(load_export(chat_export), JobSpec("gpt-4o-mini"))
    time.sleep(0.2)
    events = provider.events_after(job.id, None, page_size=3)  # several pages
    later = provider.events_after(job.id, events[4].id, page_size=3)
    assert [e.id for e in events] == [e["id"] for e in fake_openai.state.jobs[job.id].events]
    assert [e.id for e in later] == [e.id for e in events[5:]]
    afters = [r.query for r in fake_openai.state.requests if r.path.endswith("/events")]
    assert any("after=" in q for q in afters)


def test_follow_survives_a_dropped_connection(tmp_path: Path, chat_export: Path) -> None:
    state = FakeOpenAIState(finetune_step_seconds=0.05)
    port = free_port()
    app = create_fake_openai(state)
    server = serve_app(app, port=port)
    url = server.__enter__() + "/v1"
    provider = provider_for(url)
    job = provider.start(load_export(chat_export), JobSpec("gpt-4o-mini"))
    recorder = Recorder()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = follow(provider, job.id, observer=recorder, backoff=FAST)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while not recorder.events and time.monotonic() < deadline:
        time.sleep(0.01)
    server.__exit__(None, None, None)  # the provider goes away mid-follow
    time.sleep(0.3)
    state.fail_next(2, 503)  # and answers 503 for a while when it comes back
    with serve_app(app, port=port):
        thread.join(10)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.job.status == "succeeded" and result.reconnects >= 3 and recorder.drops >= 3
    assert [e.id for e in recorder.events] == [e["id"] for e in state.jobs[job.id].events]


def test_follow_gives_up_with_a_way_back(chat_export: Path) -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}/v1")
    clock = iter(range(0, 10_000, 50))
    with pytest.raises(ProviderError, match="tuneloop jobs follow ftjob-x"):
        follow(
            provider,
            "ftjob-x",
            backoff=Backoff(initial=0, maximum=0, give_up_after=120),
            sleep=lambda s: None,
            clock=lambda: float(next(clock)),
        )


def test_failed_and_cancelled_jobs(fake_openai: FakeUpstream, chat_export: Path) -> None:
    fake_openai.state.finetune_step_seconds = 0.03
    provider = provider_for(fake_openai.base_url)
    failing = provider.start(load_export(chat_export), JobSpec("gpt-4o-mini", suffix="fail"))
    result = follow(provider, failing.id, backoff=FAST)
    assert result.job.status == "failed" and result.job.fine_tuned_model is None
    assert result.job.error and result.job.error["code"] == "training_failed"
    with pytest.raises(NotFound, match="no result file"):
        provider.results(failing.id)

    fake_openai.state.finetune_step_seconds = 5
    running = provider.start(load_export(chat_export), JobSpec("gpt-4o-mini"))
    assert provider.cancel(running.id).status == "cancelled"
    assert follow(provider, running.id, backoff=FAST).job.status == "cancelled"
    with pytest.raises(ProviderError, match="refused \\(400\\)"):
        provider.cancel(running.id)
    with pytest.raises(NotFound):
        provider.retrieve("ftjob-missing")


def test_dpo_job_and_method_checks(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    examples = [
        chat_example(i, original={"role": "assistant", "content": "Soon."}) for i in range(30)
    ]
    export(examples, tmp_path / "dpo", ExportOptions(name="p", format=FormatOptions("preference")))
    provider = provider_for(fake_openai.base_url)
    dpo = load_export(tmp_path / "dpo")
    with pytest.raises(DatasetError, match="'dpo', not 'supervised'"):
        provider.start(dpo, JobSpec("gpt-4o-mini"))
    with pytest.raises(DatasetError, match="can't train"):
        provider.start(dpo, JobSpec("davinci-002", method="dpo"))
    assert not [r for r in fake_openai.state.requests if r.path == "/v1/files"]  # nothing sent
    job = provider.start(dpo, JobSpec("gpt-4o-mini", method="dpo", hyperparameters={"beta": 0.2}))
    assert job.method == "dpo" and job.hyperparameters["beta"] == 0.2
    fake_openai.state.finetune_step_seconds = 0.02
    assert follow(provider, job.id, backoff=FAST).job.status == "succeeded"


def test_rich_display_shows_events_and_progress() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    with RichFollowDisplay("ftjob-1", console) as display:
        display.event(JobEvent("e1", 1_700_000_000, "info", "Fine-tuning job [started]"))
        display.event(
            JobEvent(
                "e2",
                1_700_000_001,
                "info",
                "Step 4/10: training loss=0.50",
                "metrics",
                {"step": 4, "total_steps": 10, "train_loss": 0.5},
            )
        )
        display.connection_lost(ProviderError("down"), 2.0)
        display.status(JobInfo("ftjob-1", "running", "gpt-4o-mini"))
    text = out.getvalue()
    assert "Fine-tuning job [started]" in text and "training loss=0.50" in text
    assert "retrying in 2 s" in text and "4/10" in text


def test_result_csv_parsing() -> None:
    curves = parse_result_csv(
        "step,train_loss,train_accuracy,valid_loss\n1,2.5,0.1,\n2,1.5,0.4,1.7\n,,,\n"
    )
    assert curves.steps == [1, 2] and curves.train_loss == [2.5, 1.5]
    assert curves.valid_loss == [None, 1.7]
    assert parse_result_csv("step,train_loss\n").steps == []
