"""The cycle's configuration, its documentation, its schedule, and the canary verdict."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from exporter.cycle_config import CanaryConfig, parse_cycle_config
from exporter.cycle_steps import training_cost, unhealthy
from tuneloop.commands.cycle import parse_interval
from tuneloop.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_cycle_toml_is_a_valid_config() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```toml\n# cycle.toml\n(.*?)```", readme, re.S)
    assert block is not None
    config = parse_cycle_config(tomllib.loads(block.group(1)))
    assert config.alias == "support-bot" and config.finetune.max_cost_usd == 25.0
    assert config.evaluate.margin == 0.02 and config.canary.percent == 10


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"canary\.percent"):
        parse_cycle_config({"name": "x", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "gpt-4o-mini"},
                            "canary": {"percent": 150}})
    with pytest.raises(ConfigError, match=r"finetune\.base_modle"):
        parse_cycle_config({"name": "x", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "m", "base_modle": "typo"}})


def test_compose_runs_the_scheduler_on_request() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    scheduler = compose["services"]["scheduler"]
    assert scheduler["command"][:2] == ["tuneloop", "cycle"] and "--every" in scheduler["command"]
    assert scheduler["profiles"] == ["scheduler"]
    every = scheduler["command"][scheduler["command"].index("--every") + 1]
    assert parse_interval(every) == 6 * 3600


def test_intervals() -> None:
    assert parse_interval("90s") == 90 and parse_interval("30m") == 1800
    assert parse_interval("1d") == 86400 and parse_interval("15") == 15
    for bad in ("6 hours", "0h", "-1m", ""):
        with pytest.raises(click.BadParameter):
            parse_interval(bad)


def test_training_cost_follows_the_epochs_of_the_job() -> None:
    manifest = {"billing": {"default_epochs": 3, "billed_tokens_per_epoch": 1_000_000,
                            "price_per_1m_tokens": 3.0, "estimated_cost_usd": 9.0}}
    assert training_cost(manifest, {}) == 9.0
    assert training_cost(manifest, {"n_epochs": 5}) == 15.0
    unknown = {"billing": {"default_epochs": 3, "billed_tokens_per_epoch": 10,
                           "price_per_1m_tokens": None, "estimated_cost_usd": None}}
    assert training_cost(unknown, {"n_epochs": 2}) is None


def row(requests: int, errors: int, feedback: float | None = None, count: int = 0) -> dict:
    return {"requests": requests, "errors": errors, "error_rate": errors / requests,
            "feedback_mean": feedback, "feedback_count": count}


def test_canary_verdict() -> None:
    cfg = CanaryConfig(max_error_rate_increase=0.01, max_feedback_drop=0.1, min_feedback=5)
    assert unhealthy(row(100, 1), row(900, 9), cfg) == []
    [reason] = unhealthy(row(100, 5), row(900, 9), cfg)
    assert reason.startswith("error rate 0.050")
    assert unhealthy(row(100, 0, -0.5, 4), row(900, 0, 0.5, 50), cfg) == []  # too few scores
    [reason] = unhealthy(row(100, 0, 0.2, 5), row(900, 0, 0.5, 50), cfg)
    assert reason.startswith("mean feedback")
    assert unhealthy(row(100, 0, 0.45, 5), row(900, 0, 0.5, 50), cfg) == []
