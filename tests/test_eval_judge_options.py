"""The judge scorer's options: `--judge-model` / `--rubric` with another scorer are refused
(exit 2) before anything is sent, not silently dropped for an exact-match evaluation; a judge
that is the candidate or the baseline itself is warned of (a model prefers its own answers),
by `evaluate` and by the cycle."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.fakes.judge import FakeJudge
from tests.test_cycle import CURRENT, config, loop, run
from tests.test_evaluate import BASELINE, CANDIDATE, make_export
from tuneloop.cli import main

__all__ = ["loop"]  # the cycle's fixture


def cli(proxy: ProxyServer, tmp_path: Path, *args: str) -> Result:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), *args], env=env)


@pytest.mark.parametrize(("given", "named"), [
    (["--judge-model", "gpt-4o"], "--judge-model is"),
    (["--rubric", "RUBRIC"], "--rubric is"),
    (["--scorer", "exact_strict", "--judge-model", "gpt-4o", "--rubric", "RUBRIC"],
     "--judge-model and --rubric are"),
])
def test_judge_options_without_the_judge_scorer_are_refused(
        proxy: ProxyServer, tmp_path: Path, given: list[str], named: str) -> None:
    data = make_export(tmp_path / "qa")
    rubric = tmp_path / "rubric.md"
    rubric.write_text("Prefer polite answers.\n")
    given = [str(rubric) if arg == "RUBRIC" else arg for arg in given]
    mark = len(proxy.upstream.state.requests)
    for command in (["evaluate", "--dataset", str(data), "--candidate", CANDIDATE,
                     "--baseline", BASELINE],
                    ["jobs", "checkpoints", "ftjob-any", "--dataset", str(data),
                     "--baseline", BASELINE]):
        result = cli(proxy, tmp_path, *command, *given)
        said = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert f"{named} for the judge scorer, but the scorer is" in said
        assert "add --scorer judge" in said
    assert len(proxy.upstream.state.requests) == mark  # nothing was evaluated
    assert proxy.admin().eval_runs() == []


@pytest.mark.parametrize(("judge", "role"), [(CANDIDATE, "candidate"), (BASELINE, "baseline")])
def test_a_judge_that_is_one_of_the_models_is_warned_of(proxy: ProxyServer, tmp_path: Path,
                                                        judge: str, role: str) -> None:
    data = make_export(tmp_path / "qa")
    proxy.upstream.state.judges[judge] = FakeJudge(prefer="echo:")
    result = cli(proxy, tmp_path, "evaluate", "--dataset", str(data), "--candidate", CANDIDATE,
                 "--baseline", BASELINE, "--scorer", "judge", "--judge-model", judge)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"warning: the judge model {judge} is also the {role}: a model tends to prefer " \
        "its own answers" in said
    other = "gpt-4o" if judge != "gpt-4o" else "gpt-4.1"
    proxy.upstream.state.judges[other] = FakeJudge(prefer="echo:")
    fine = cli(proxy, tmp_path, "evaluate", "--dataset", str(data), "--candidate", CANDIDATE,
               "--baseline", BASELINE, "--scorer", "judge", "--judge-model", other)
    assert fine.exit_code == 0 and "warning" not in fine.output


def test_the_cycle_warns_of_a_judge_that_is_the_current_model(loop: ProxyServer,
                                                              tmp_path: Path) -> None:
    loop.upstream.state.judges[CURRENT] = FakeJudge(prefer="echo:")
    outcome = run(loop, config(tmp_path, evaluate={"scorer": "judge", "judge_model": CURRENT}))
    assert outcome.run["state"].get("eval_run_id"), outcome.message
    assert any(f"the judge model {CURRENT} is also the baseline" in w
               for w in outcome.warnings), outcome.warnings
