"""A job's checkpoints: listed from the fake OpenAI's checkpoints endpoint with the official
SDK, each evaluated through a real proxy, the best one promoted; their validation loss shown
beside the scores."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from exporter.finetune import default_provider
from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.test_cycle import ALIAS, CURRENT, config, run
from tuneloop.cli import main

# one store: nothing here differs between DuckDB and Postgres (tests/test_cycle.py runs both)
loop = test_cycle.loop  # the fixture: approved traffic, the alias, fast fake fine-tuning
WORSE = "I don't know."


def test_checkpoints_are_evaluated_and_the_best_promoted(loop: ProxyServer,
                                                         tmp_path: Path) -> None:
    loop.upstream.state.model_replies[CURRENT] = WORSE
    loop.upstream.state.finetune_step_seconds = 0.3  # still training when the wait times out
    cfg = config(tmp_path, evaluate={"checkpoints": 3, "margin": 0.5},
                 finetune={"wait_timeout_minutes": 0.001})
    first = run(loop, cfg)
    assert first.run["step"] == "wait"
    [job] = loop.upstream.state.jobs.values()
    names = {step: f"{job.model_name()}:ckpt-step-{step}" for step in (6, 8, 10)}
    # the last epoch overfits: only the step-8 checkpoint answers as the reviewers approved
    loop.upstream.state.model_replies.update({names[6]: WORSE, names[10]: WORSE})
    loop.upstream.state.finetune_step_seconds = 0.01

    second = run(loop, config(tmp_path, evaluate={"checkpoints": 3, "margin": 0.5}))
    assert second.run["step"] == "watch", second.message
    assert second.run["state"]["fine_tuned_model"] == names[8]
    assert second.run["state"]["final_model"] == job.fine_tuned_model
    spec = loop.admin().routes()[ALIAS]
    assert [t["model"] for t in spec["targets"]] == [CURRENT, names[8]]
    [step] = [s for s in loop.admin().cycle_run(second.run["id"])["steps"]
              if s["step"] == "checkpoints"]
    rows = {c["step"]: c for c in step["detail"]["checkpoints"]}
    assert sorted(rows) == [6, 8, 10] and step["detail"]["best"]["step"] == 8
    assert {s: rows[s]["margin"] for s in rows} == {6: 0.0, 8: 1.0, 10: 0.0}
    assert all(rows[s]["metrics"]["full_valid_loss"] is not None for s in rows)
    assert rows[8]["valid_loss"] < rows[10]["valid_loss"]  # the full-set loss agrees

    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN}
    shown = CliRunner().invoke(main, ["jobs", "checkpoints", job.id, "--api", loop.url], env=env)
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line for line in shown.output.splitlines()[1:]}
    assert f"{rows[8]['metrics']['full_valid_loss']:.4f}" in lines["8"]
    assert "1.0000" in lines["8"] and lines["8"].endswith("<- best")
    assert "0.0000" in lines["10"] and "best" not in lines["10"]

    export_dir = second.run["state"]["export_path"]
    chosen = CliRunner().invoke(main, [
        "jobs", "checkpoints", job.id, "--checkpoints", "2", "--dataset", export_dir,
        "--baseline", CURRENT, "--promote", ALIAS, "--json", "--api", loop.url], env=env)
    assert chosen.exit_code == 0, chosen.output
    result = json.loads(chosen.output)
    assert [c["step"] for c in result["checkpoints"]] == [8, 10]
    assert result["best"]["model"] == names[8] and result["promoted"]["canary"] == 100
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [names[8]]


def test_the_provider_lists_checkpoints_by_step(loop: ProxyServer, tmp_path: Path) -> None:
    run(loop, config(tmp_path))  # trains one job (no validation file needed for the listing)
    [job] = loop.upstream.state.jobs.values()
    found = default_provider().checkpoints(job.id)
    assert [c.step for c in found] == [6, 8, 10]
    assert [c.model for c in found] == [f"{job.model_name()}:ckpt-step-{s}" for s in (6, 8, 10)]
    assert found[0].metrics["train_loss"] is not None and found[0].id.startswith("ftckpt-")
