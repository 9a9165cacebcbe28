"""A job's checkpoints: listed from the fake OpenAI's checkpoints endpoint with the official
SDK, each evaluated through a real proxy, the best one promoted; their validation loss shown
beside the scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    # the evaluate step gates the best of 3 at Bonferroni's level, 1 - 0.05/3
    gated = loop.admin().eval_run(second.run["state"]["eval_run_id"])["report"]
    assert gated["intervals"]["comparisons"] == 3
    assert gated["confidence"] == pytest.approx(1 - 0.05 / 3)
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
    loop.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT}]}}, force=True)
    # the current model answers as approved again, the last checkpoint loses on every
    # example: the best of the one evaluated is refused, nothing is routed
    del loop.upstream.state.model_replies[CURRENT]
    promote = ["jobs", "checkpoints", job.id, "--dataset", export_dir, "--baseline", CURRENT,
               "--promote", ALIAS, "--api", loop.url]
    refused = CliRunner().invoke(main, [*promote, "--checkpoints", "1"], env=env)
    assert refused.exit_code == 8, refused.output
    said = " ".join(refused.output.split())
    assert f"not promoted: the best checkpoint {names[10]} (step 10) did not pass the gate: " \
        "the margin's lower confidence bound -1.0000 is not above 0" in said
    assert "the exact McNemar test does not favour the candidate (0 better, 9 worse" in said
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT]
    loop.upstream.state.model_replies[CURRENT] = WORSE
    # 9 of 9 examples better: the gate passes with min_discordant lowered to 5; a canary
    chosen = CliRunner().invoke(main, [*promote, "--checkpoints", "2", "--min-discordant", "5",
                                       "--json"], env=env)
    assert chosen.exit_code == 0, chosen.output
    result = json.loads(chosen.output)
    assert [c["step"] for c in result["checkpoints"]] == [8, 10]
    assert result["gate"] == {"passed": True, "reasons": []}
    assert result["best"]["model"] == names[8] and result["promoted"]["canary"] == 10
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [CURRENT, names[8]]
    # at the default minimum of 10 discordant examples, 9 are not enough: nothing is routed
    few = CliRunner().invoke(main, [*promote, "--checkpoints", "2", "--full"], env=env)
    assert few.exit_code == 8 and "only 9 discordant examples" in " ".join(few.output.split())
    full = CliRunner().invoke(main, [*promote, "--checkpoints", "2", "--min-discordant", "5",
                                     "--full"], env=env)
    assert full.exit_code == 0, full.output
    assert f"promoted {names[8]} (step 8) fully on {ALIAS}" in full.output
    assert [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]] == [names[8]]


def test_the_provider_lists_checkpoints_by_step(loop: ProxyServer, tmp_path: Path) -> None:
    run(loop, config(tmp_path))  # trains one job (no validation file needed for the listing)
    [job] = loop.upstream.state.jobs.values()
    found = default_provider().checkpoints(job.id)
    assert [c.step for c in found] == [6, 8, 10]
    assert [c.model for c in found] == [f"{job.model_name()}:ckpt-step-{s}" for s in (6, 8, 10)]
    assert found[0].metrics["train_loss"] is not None and found[0].id.startswith("ftckpt-")
