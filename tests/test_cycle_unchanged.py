"""A cycle whose data did not change writes no new dataset version or export directory, and
says so (issue 14): real proxy, fake upstream with its fine-tuning jobs, the cycle's library
entry point as `tuneloop cycle` calls it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ProxyServer
from tests.test_cycle import (  # noqa: F401  (loop: the fixture)
    ALIAS,
    config,
    loop,
    run,
    send,
    the_current_model_is_worse,
)
from tests.test_cycle_canary import wait_ingested
from tests.test_cycle_settle import MAX_HOURS, wait_past_max_hours


def test_unchanged_data_writes_no_dataset_version_and_no_export_directory(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    exports = tmp_path / "exports"
    capped = config(tmp_path, finetune={"max_cost_usd": 0.000001})
    first = run(loop, capped)
    assert first.run["outcome"] == "over_budget"
    assert [v["version"] for v in loop.admin().dataset_versions("support")["versions"]] == [1]
    made = sorted(exports.iterdir())
    assert len(made) == 1

    again = run(loop, capped)  # the same data: version 1 is used again, nothing written
    assert again.run["id"] != first.run["id"] and again.run["outcome"] == "over_budget"
    assert [v["version"] for v in loop.admin().dataset_versions("support")["versions"]] == [1]
    assert sorted(exports.iterdir()) == made
    exported = next(s for s in loop.admin().cycle_run(again.run["id"])["steps"]
                    if s["step"] == "export" and s["status"] == "done")
    assert "has not changed since dataset support version 1" in exported["detail"]["message"]
    assert again.run["state"]["export_path"] == str(made[0])

    trained = run(loop, config(tmp_path))  # trains on version 1's directory
    assert trained.run["outcome"] == "not_promoted" and len(loop.upstream.state.jobs) == 1
    assert trained.run["state"]["export_path"] == str(made[0])

    unchanged = run(loop, config(tmp_path))
    assert unchanged.run["outcome"] == "unchanged" and len(loop.upstream.state.jobs) == 1
    assert f"have not changed since run {trained.run['id']}" in unchanged.message
    assert "no new dataset version or export directory written" in unchanged.message
    assert [v["version"] for v in loop.admin().dataset_versions("support")["versions"]] == [1]
    assert sorted(exports.iterdir()) == made and not list(exports.glob(".*"))


def test_a_model_trained_by_a_run_that_failed_later_is_evaluated_not_stranded(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """The evaluation kept failing (the alias lost its route, so no current model to compare
    with) after the job trained: once fixed, the next run picks up the trained model and
    evaluates it; no second job, never `unchanged`."""
    the_current_model_is_worse(loop)
    routes = loop.admin().routes()
    loop.admin().put_routes({}, force=True)
    cfg = config(tmp_path, max_step_attempts=2)
    for _ in range(2):
        failing = run(loop, cfg)
        assert "step evaluate failed: the alias 'support-bot' has no route" in failing.message
    loop.admin().put_routes(routes, force=True)
    assert failing.status == "failed" and len(loop.upstream.state.jobs) == 1
    model = failing.run["state"]["fine_tuned_model"]

    picked = run(loop, cfg)
    assert picked.run["id"] != failing.run["id"]
    assert picked.status == "active" and picked.run["step"] == "watch", picked.message
    assert picked.run["state"]["resumed_from"] == failing.run["id"]
    assert picked.run["state"]["fine_tuned_model"] == model
    assert len(loop.upstream.state.jobs) == 1  # its job, not a second one
    steps = [s["step"] for s in loop.admin().cycle_run(picked.run["id"])["steps"]]
    assert "finetune" not in steps and "validate" not in steps and "evaluate" in steps
    assert model in [t["model"] for t in loop.admin().routes()[ALIAS]["targets"]]


def test_changed_training_settings_train_again_and_force_retrains(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    first = run(loop, config(tmp_path))
    assert first.run["outcome"] == "not_promoted" and len(loop.upstream.state.jobs) == 1
    epochs = run(loop, config(tmp_path, finetune={"hyperparameters": {"n_epochs": 3}}))
    assert epochs.run["outcome"] == "not_promoted", epochs.message
    assert len(loop.upstream.state.jobs) == 2
    base = run(loop, config(tmp_path, finetune={"base_model": "gpt-4.1-mini-2025-04-14",
                                                "hyperparameters": {"n_epochs": 3}}))
    assert base.run["outcome"] == "not_promoted", base.message
    assert len(loop.upstream.state.jobs) == 3
    same = run(loop, config(tmp_path, finetune={"hyperparameters": {"n_epochs": 3}}))
    assert same.run["outcome"] == "unchanged" and len(loop.upstream.state.jobs) == 3
    assert f"since run {epochs.run['id']}" in same.message and "--force" in same.message
    forced = run(loop, config(tmp_path), force=True)
    assert forced.run["outcome"] == "not_promoted" and len(loop.upstream.state.jobs) == 4


def test_a_job_whose_run_failed_while_following_it_is_followed_again_not_retrained(
        loop: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The provider could not be reached while the job trained (the run failed at `wait`):
    the next run follows the same job (a wait timeout is no training setting)."""
    the_current_model_is_worse(loop)
    loop.upstream.state.finetune_step_seconds = 0.3  # still training when the wait times out
    first = run(loop, config(tmp_path, finetune={"wait_timeout_minutes": 0.001},
                             max_step_attempts=2))
    assert first.run["step"] == "wait" and len(loop.upstream.state.jobs) == 1
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    for _ in range(2):
        failing = run(loop, config(tmp_path, max_step_attempts=2))
        assert "step wait failed" in failing.message
    assert failing.status == "failed" and failing.run["id"] == first.run["id"]

    monkeypatch.setenv("OPENAI_BASE_URL", loop.upstream.base_url)
    loop.upstream.state.finetune_step_seconds = 0.01
    picked = run(loop, config(tmp_path))
    assert picked.run["state"]["resumed_from"] == first.run["id"], picked.message
    assert picked.run["step"] == "watch" and len(loop.upstream.state.jobs) == 1
    assert picked.run["state"]["job_id"] == first.run["state"]["job_id"]


def test_a_canary_rolled_back_undecided_is_opened_again_once_without_training(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14b #3: a flawless canary on a quiet alias expires at max_hours and is rolled back
    undecided. On main every later run on the same data ended `unchanged` for good (only
    --force, a new paid job, helped); now the next run opens the same model's canary again,
    once for this data and these settings, and after a second undecided expiry the cycle is
    `unchanged` (no churn) until the data or the settings change."""
    import time
    the_current_model_is_worse(loop)
    cfg = config(tmp_path, canary={"percent": 10, "min_requests": 100, "max_hours": 0.0005})
    first = run(loop, cfg)
    assert first.status == "active" and first.run["step"] == "watch", first.message
    model = first.run["state"]["fine_tuned_model"]
    time.sleep(2)  # past max_hours (1.8 s) with no canary traffic
    expired = run(loop, cfg)
    assert expired.run["outcome"] == "rolled_back" and expired.run["state"][
        "rolled_back_undecided"] is True, expired.message
    # r14c #5: the cron output says it will be re-opened once
    assert "re-opens it once (no new job)" in expired.message, expired.message

    again = run(loop, cfg)
    assert again.status == "active" and again.run["step"] == "watch", again.message
    assert again.run["state"]["reopened_from"] == expired.run["id"]
    assert again.run["state"]["fine_tuned_model"] == model
    assert len(loop.upstream.state.jobs) == 1  # no retraining
    exported = next(s for s in loop.admin().cycle_run(again.run["id"])["steps"]
                    if s["step"] == "export" and s["status"] == "done")
    assert "rolled back undecided at max_hours" in exported["detail"]["message"]
    assert {t["model"]: t["weight"] for t in loop.admin().routes()[ALIAS]["targets"]}[model] == 10

    time.sleep(2)
    again_expired = run(loop, cfg)
    assert again_expired.run["outcome"] == "rolled_back"
    assert "expired undecided again" in again_expired.message and \
        "NOT re-opened" in again_expired.message, again_expired.message
    settled = run(loop, cfg)  # the re-opened canary expired undecided too: no third time
    assert settled.run["outcome"] == "unchanged", settled.message
    assert len(loop.upstream.state.jobs) == 1


def test_a_model_not_promoted_by_a_gate_since_relaxed_is_evaluated_again(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14b #3: not promoted by too strict a gate; the engineer relaxes `[evaluate]`: the next
    run evaluates the trained model again (on main: `unchanged` for good), no second job."""
    the_current_model_is_worse(loop)
    strict = run(loop, config(tmp_path, evaluate={"min_discordant": 50}))
    assert strict.run["outcome"] == "not_promoted", strict.message
    assert run(loop, config(tmp_path, evaluate={"min_discordant": 50})).run["outcome"] \
        == "unchanged"
    relaxed = run(loop, config(tmp_path))
    assert relaxed.status == "active" and relaxed.run["step"] == "watch", relaxed.message
    assert relaxed.run["state"]["reopened_from"] == strict.run["id"]
    assert relaxed.run["state"]["fine_tuned_model"] == strict.run["state"]["fine_tuned_model"]
    assert len(loop.upstream.state.jobs) == 1


def test_settings_that_judge_nothing_do_not_evaluate_a_not_promoted_model_again(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14d: on main any change of `[canary]` (even `watch_seconds`) or of `[evaluate]`'s
    concurrency re-ran the gate on a model the gate had refused: only the gate's own
    settings do."""
    the_current_model_is_worse(loop)
    strict = {"min_discordant": 50}
    first = run(loop, config(tmp_path, evaluate=strict))
    assert first.run["outcome"] == "not_promoted", first.message
    for sections in ({"evaluate": strict, "canary": {"watch_seconds": 30, "percent": 20}},
                     {"evaluate": {**strict, "concurrency": 2, "retries": 1}}):
        again = run(loop, config(tmp_path, **sections))
        assert again.run["outcome"] == "unchanged", (sections, again.message)
    assert len(loop.upstream.state.jobs) == 1


def test_a_re_opened_canary_is_judged_on_its_first_windows_evidence_too(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14d: the re-opened canary's test started from nothing, so a canary undecided twice had
    two independent chances at being promoted (about twice beta); it goes on instead."""
    the_current_model_is_worse(loop)
    cfg = config(tmp_path, canary={"percent": 50, "min_requests": 1000, "max_hours": MAX_HOURS})
    first = run(loop, cfg)
    assert first.run["step"] == "watch", first.message
    model = first.run["state"]["fine_tuned_model"]
    send(loop, 40)
    wait_ingested(loop, 40)
    wait_past_max_hours(datetime.fromisoformat(first.run["state"]["promoted_at"]))
    expired = run(loop, cfg)
    assert expired.run["state"]["rolled_back_undecided"] is True, expired.message
    [before] = [t for t in loop.admin().route_health(
        ALIAS, since=first.run["state"]["promoted_at"])["targets"] if t["target"] == model]
    assert before["requests"] > 0
    again = run(loop, cfg)
    assert again.run["step"] == "watch", again.message
    watched = loop.admin().cycle_run(again.run["id"])["steps"][-1]["detail"]
    assert watched["canary"]["requests"] == before["requests"], watched  # on main: 0
    # r14l LOW 4: its strata's allowances count the time it was open, not the time closed
    open_s = expired.run["state"]["open_s"]
    first_open = datetime.fromisoformat(first.run["state"]["promoted_at"])
    reopened = datetime.fromisoformat(again.run["state"]["promoted_at"])
    assert 0 < open_s < (reopened - first_open).total_seconds()
    assert again.run["state"]["evidence_open_s"] == open_s


def said(run: dict[str, Any], step: str) -> str:
    """What a run's step recorded (its detail), as text."""
    return " ".join(str(s.get("detail")) for s in run["steps"] if s["step"] == step)


def test_a_relaxed_gate_is_a_repeated_test_and_says_so(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14g #9: evaluating a not-promoted model again on the same validation examples after
    the gate changed is a second test of it (a user could adjust the gate until it passes):
    its intervals are at Bonferroni's level for the tests so far, and the report says so."""
    the_current_model_is_worse(loop)
    strict = run(loop, config(tmp_path, evaluate={"min_discordant": 50}))
    assert strict.run["outcome"] == "not_promoted", strict.message
    notes: list[str] = []
    relaxed = run(loop, config(tmp_path), say=notes.append)
    assert relaxed.run["state"]["reopened_from"] == strict.run["id"], relaxed.message
    assert relaxed.run["state"]["repeated_tests"] == 2
    report = loop.admin().eval_run(relaxed.run["state"]["eval_run_id"])["report"]
    assert report["confidence"] == pytest.approx(1 - 0.05 / 2)
    assert report["intervals"]["repeated"] == 2
    assert "repeated test" in said(relaxed.run, "export")
    assert "repeated test: gate number 2 of this model" in "\n".join(notes)


def test_an_edited_rubric_file_judges_a_not_promoted_model_again(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """r14g #9: the config names the rubric's file; editing the file changes the judgement
    (on main: the run ended `unchanged`, the new rubric silently not applied)."""
    from tests.fakes.judge import FakeJudge

    the_current_model_is_worse(loop)
    loop.upstream.state.judges["judge-model"] = FakeJudge(prefer="echo:")
    rubric = tmp_path / "rubric.md"
    rubric.write_text("Prefer the shorter answer.\n")
    judged = {"scorer": "judge", "judge_model": "judge-model", "rubric": str(rubric),
              "min_decided": 50}
    first = run(loop, config(tmp_path, evaluate=judged))
    assert first.run["outcome"] == "not_promoted", first.message
    assert run(loop, config(tmp_path, evaluate=judged)).run["outcome"] == "unchanged"
    rubric.write_text("Prefer answers that repeat the question.\n")
    again = run(loop, config(tmp_path, evaluate=judged))
    assert again.run["outcome"] == "not_promoted", again.message  # judged again: too few
    assert again.run["state"]["reopened_from"] == first.run["id"]
    assert "(the rubric file) changed" in said(again.run, "export")
    assert len(loop.upstream.state.jobs) == 1
