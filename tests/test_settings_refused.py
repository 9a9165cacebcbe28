"""Settings that can never work are refused before anything is sent, uploaded or trained
(review r14 #10): a margin no built-in scorer can reach, a canary of 100% (no test) or of a
sliver (never decides), zero epochs or a negative batch size at Together (it created the
job). Real proxy, the Together fake, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.cycle_config import parse_cycle_config
from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.test_export_cli import flat, run_cli
from tests.test_trainers import TOGETHER_MODEL, export_dir, together  # noqa: F401  (fixtures)
from tuneloop.errors import ConfigError


def cycle(**sections: dict[str, Any]) -> dict[str, Any]:
    return {"name": "x", "alias": "a", "dataset": {"name": "d"},
            "finetune": {"base_model": "m"}, **sections}


def test_the_cycle_config_refuses_settings_that_never_work() -> None:
    refused = [
        (cycle(evaluate={"margin": 1.0}), r"evaluate\.margin: margin 1 can never be met: the "
                                          r"exact scorer's margin is a difference of rates"),
        (cycle(evaluate={"margin": 5, "scorer": "judge", "judge_model": "j"}),
         r"evaluate\.margin: margin 5 can never be met: the judge scorer"),
        (cycle(canary={"percent": 100}), r"canary: percent = 100 is not a canary: .*untested "
                                         r"\(to give a model all the traffic, promote it"),
        (cycle(canary={"percent": 0.0001}), r"canary: percent = 0\.0001 is too small a canary"),
        (cycle(finetune={"base_model": "m", "hyperparameters": {"n_epochs": 0}}),
         r"finetune: hyperparameters: n_epochs \(--epochs\) must be a whole number of at least "
         r"1 \(or \"auto\"\), got 0"),
        (cycle(finetune={"base_model": "m", "hyperparameters": {"batch_size": -1}}),
         r"batch_size \(--batch-size\) must be a whole number of at least 1"),
        (cycle(finetune={"base_model": "m",
                         "hyperparameters": {"learning_rate_multiplier": 0}}),
         r"learning_rate_multiplier \(--lr-multiplier\) must be a number above 0"),
    ]
    for data, message in refused:
        with pytest.raises(ConfigError, match=message):
            parse_cycle_config(data)
    # a user function's scores have no known range; "auto" is OpenAI's default
    parse_cycle_config(cycle(evaluate={"margin": 5, "scorer": "json:dumps"}))
    parse_cycle_config(cycle(finetune={"base_model": "m",
                                       "hyperparameters": {"n_epochs": "auto"}}))


def test_the_cli_refuses_them_before_sending_anything(
        proxy: ProxyServer, export_dir: Path, tmp_path: Path,  # noqa: F811
        together: tuple[str, Any]) -> None:  # noqa: F811
    url, state = together
    files, jobs = len(state.files), len(state.jobs)
    for flag, value, said in [("--epochs", "0", "n_epochs (--epochs) must be a whole number"),
                              ("--batch-size", "-1", "batch_size (--batch-size) must be a")]:
        refused = run_cli(proxy, tmp_path, "finetune", "--provider", "together", "--dataset",
                          str(export_dir), "--base-model", TOGETHER_MODEL, flag, value,
                          token=ADMIN_TOKEN, TUNELOOP_TOGETHER_BASE_URL=url,
                          TOGETHER_API_KEY=state.api_key)
        assert refused.exit_code == 2 and said in flat(refused.output), refused.output
    assert (len(state.files), len(state.jobs)) == (files, jobs)  # nothing uploaded or started

    margin = run_cli(proxy, tmp_path, "evaluate", "--dataset", str(export_dir),
                     "--candidate", "ft:m", "--baseline", "gpt-4o-mini", "--margin", "1")
    assert margin.exit_code == 2 and "margin 1 can never be met" in flat(margin.output)
    assert proxy.admin().eval_runs() == []

    base = ["jobs", "checkpoints", "ftjob-x", "--dataset", str(export_dir), "--baseline",
            "gpt-4o-mini", "--promote", "bot"]
    full = run_cli(proxy, tmp_path, *base, "--canary", "100")
    assert full.exit_code == 2, full.output
    assert "100 is not a canary" in flat(full.output) and "use --full" in flat(full.output)
    sliver = run_cli(proxy, tmp_path, *base, "--canary", "0.001")
    assert sliver.exit_code == 2 and "too small a canary" in flat(sliver.output)
