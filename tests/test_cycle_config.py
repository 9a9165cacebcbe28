"""The cycle's configuration, its documentation, its schedule, and the canary verdict."""

from __future__ import annotations

import math
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from exporter.canary_stats import SprtParams, sprt
from exporter.cycle_canary import judge_canary
from exporter.cycle_config import CanaryConfig, parse_cycle_config
from exporter.cycle_steps import training_cost
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
    # the example shows the defaults it does not explain otherwise
    assert config.canary.min_requests == CanaryConfig().min_requests


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


def row(requests: int, errors: int, rated: int = 0, down: int = 0) -> dict[str, Any]:
    return {"requests": requests, "errors": errors, "error_rate": errors / requests,
            "votes": rated, "down_votes": down}


def test_sprt_bounds_and_decisions() -> None:
    params = SprtParams(alpha=0.025, beta=0.2, tolerance=0.01, bad=0.05)
    assert params.upper == pytest.approx(math.log(1 / 0.025))
    assert params.lower == pytest.approx(math.log(0.2 / 0.975))
    # 30% errors against a clean baseline: worse after a handful of requests
    assert sprt("errors", 10, 3, 90, 0, params).decision == "worse"
    # clean against clean: no worse once ~40 canary requests are in, undecided before
    assert sprt("errors", 20, 0, 180, 0, params).decision == "continue"
    assert sprt("errors", 60, 0, 540, 0, params).decision == "not_worse"
    # an even canary (10% against 10%) stays undecided for a while
    assert sprt("errors", 40, 4, 360, 36, params).decision == "continue"
    with pytest.raises(ValueError):
        sprt("errors", 5, 6, 10, 0, params)


def test_canary_verdict() -> None:
    cfg = CanaryConfig(min_requests=50, min_feedback=5)
    week = timedelta(hours=7)  # below max_hours (24): an undecided canary still waits
    bad = judge_canary(row(10, 3), row(90, 0), cfg, timedelta(0))
    assert bad.verdict == "rollback" and bad.reasons[0].startswith("errors 3/10")
    assert judge_canary(row(60, 0), row(540, 0), cfg, week).verdict == "promote"
    early = judge_canary(row(45, 0), row(540, 0), cfg, week)  # no worse, short of min_requests
    assert early.verdict == "continue" and "45 of 50 requests" in early.reasons[0]
    young = CanaryConfig(min_requests=1, min_age_minutes=30)
    assert judge_canary(row(60, 0), row(540, 0), young, timedelta(minutes=5)).verdict \
        == "continue"
    # users hate it: the thumbs-down test rolls it back once it counts (min_feedback)
    hated = judge_canary(row(60, 0, 8, 8), row(540, 0, 80, 4), cfg, week)
    assert hated.verdict == "rollback" and hated.reasons[0].startswith("thumbs_down 8/8")
    assert judge_canary(row(60, 0, 4, 4), row(540, 0, 80, 4), cfg, week).verdict == "promote"
    # with feedback that counts, promotion waits for the thumbs-down test too
    assert judge_canary(row(60, 0, 6, 1), row(540, 0, 80, 4), cfg, week).verdict == "continue"
    record = bad.to_json()
    assert record["test"] == "sprt2" and record["tests"][0]["metric"] == "errors"


def test_effect_sizes_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="bad_error_rate_increase"):
        parse_cycle_config({"name": "c", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "m"},
                            "canary": {"tolerated_error_rate_increase": 0.1,
                                       "bad_error_rate_increase": 0.05}})


def test_a_replaced_canary_setting_says_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match=r"canary: max_feedback_drop is no longer used: .*"
                                          r"bad_thumbs_down_increase"):
        parse_cycle_config({"name": "c", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "m"},
                            "canary": {"max_feedback_drop": 0.1}})
    # the old rollback threshold's name is not reused for the test's tolerated increase
    with pytest.raises(ConfigError, match=r"canary: max_error_rate_increase is no longer used: "
                                          r"it was the error-rate increase beyond which the "
                                          r"canary was rolled back; .*bad_error_rate_increase"):
        parse_cycle_config({"name": "c", "alias": "a", "dataset": {"name": "d"},
                            "finetune": {"base_model": "m"},
                            "canary": {"max_error_rate_increase": 0.01}})


def with_evaluate(tmp_path: Path, provider: str = "openai", **evaluate: Any) -> dict[str, Any]:
    return {"name": "x", "alias": "a", "dataset": {"name": "d"},
            "finetune": {"provider": provider, "base_model": "m"}, "evaluate": evaluate}


REFUSED_EVALUATE: list[tuple[dict[str, Any], str, str]] = [
    ({"scorer": "bogus"}, "openai",
     r"evaluate\.scorer: 'bogus' is not a scorer: use one of exact, exact_strict, "
     r"classification, judge or module:function"),
    ({"scorer": "no_such_module_zz:score"}, "openai",
     r"evaluate\.scorer: cannot import the scorer module 'no_such_module_zz'"),
    ({"scorer": "json:no_such_function"}, "openai",
     r"evaluate\.scorer: json has no function 'no_such_function'"),
    ({"scorer": "judge"}, "openai", r"evaluate\.judge_model: the judge scorer needs a judge model"),
    ({"scorer": "judge", "judge_model": "gpt-4o", "rubric": "MISSING"}, "openai",
     r"evaluate\.rubric: rubric file not found"),
    ({"scorer": "judge", "judge_model": "gpt-4o", "metric": "f1"}, "openai",
     r"evaluate\.metric: 'f1' is not a metric of the judge scorer: use one of win_rate"),
    ({"judge_model": "gpt-4o"}, "openai",  # silently an exact-match evaluation otherwise
     r"evaluate\.judge_model: judge_model is for the judge scorer, but scorer = 'exact': set "
     r"scorer = \"judge\", or remove judge_model"),
    ({"scorer": "classification", "judge_model": "gpt-4o", "rubric": "r.md"}, "openai",
     r"evaluate\.judge_model: judge_model and rubric are for the judge scorer, but scorer = "
     r"'classification'"),
    ({"scorer": "classification", "metric": "mean"}, "openai",
     r"evaluate\.metric: 'mean' is not a metric of the classification scorer"),
    ({"checkpoints": 2}, "together",
     r"evaluate\.checkpoints: provider 'together' keeps no checkpoints a route can serve"),
    ({"checkpoints": 2}, "fireworks", r"evaluate\.checkpoints: provider 'fireworks'"),
]


def test_evaluate_mistakes_are_refused_when_the_config_loads(tmp_path: Path) -> None:
    """Each would otherwise be found at the evaluate step, after the job was paid for."""
    for evaluate, provider, message in REFUSED_EVALUATE:
        if evaluate.get("rubric") == "MISSING":
            evaluate = {**evaluate, "rubric": str(tmp_path / "no-rubric.md")}
        with pytest.raises(ConfigError, match=message) as caught:
            parse_cycle_config(with_evaluate(tmp_path, provider, **evaluate))
        assert caught.value.exit_code == 2
    rubric = tmp_path / "rubric.md"
    rubric.write_text("Prefer the answer that names the order's status.\n")
    for evaluate, provider in [({"scorer": "exact_strict"}, "together"),
                               ({"scorer": "json:dumps"}, "openai"),
                               ({"scorer": "judge", "judge_model": "gpt-4o",
                                 "rubric": str(rubric)}, "openai"),
                               ({"scorer": "classification", "metric": "auroc"}, "openai"),
                               ({"checkpoints": 3}, "openai")]:
        parse_cycle_config(with_evaluate(tmp_path, provider, **evaluate))


BASE = {"name": "c", "alias": "a", "dataset": {"name": "d"}, "finetune": {"base_model": "m"}}


@pytest.mark.parametrize(("section", "setting", "field"), [
    ("canary", {"max_hours": 1e12}, "canary.max_hours"),  # OverflowError at every watch
    ("canary", {"max_hours": float("inf")}, "canary.max_hours"),  # JSON crash at every run
    ("canary", {"history_hours": float("inf")}, "canary.history_hours"),
    ("canary", {"watch_seconds": float("inf")}, "canary.watch_seconds"),
    ("canary", {"alpha": float("nan")}, "canary.alpha"),
    ("canary", {"percent": 99.99}, "percent = 99.99 is too large a canary"),
    ("canary", {"min_requests": 10**9}, "canary.min_requests"),
    ("canary", {"min_requests": 0}, "canary.min_requests"),  # r14c: promotes on no traffic
    ("canary", {"min_feedback": 10**9}, "canary.min_feedback"),
    ("evaluate", {"threshold": -3}, "evaluate.threshold"),
    ("evaluate", {"threshold": 1.5}, "evaluate.threshold"),
    ("evaluate", {"confidence": float("nan")}, "evaluate.confidence"),
    # r14e #10: settings that decide on (almost) no evidence
    ("evaluate", {"min_discordant": 0}, "min_discordant = 0 lets a candidate pass"),
    ("evaluate", {"min_decided": 0}, "min_decided = 0 lets a candidate pass"),
    ("evaluate", {"max_error_share": 0.99}, "evaluate.max_error_share"),
    ("evaluate", {"gate": "point", "margin": 0}, 'gate = "point" with margin = 0'),
    ("evaluate", {"confidence": 0.51}, "confidence = 0.51 is too low for a gate"),
    ("canary", {"watch_seconds": 1e-9}, "canary.watch_seconds"),  # a busy loop
    ("evaluate", {"baseline": "a"}, "is the alias itself"),
    ("finetune", {"max_cost_usd": float("inf")}, "finetune.max_cost_usd"),
    # r14d: pydantic read `true` as 1 (a promotion on 1 request), `false` as 0
    ("canary", {"min_requests": True}, "min_requests = true: a number is expected"),
    ("canary", {"percent": True}, "percent = true: a number is expected"),
    ("evaluate", {"margin": False}, "margin = false: a number is expected"),
    ("finetune", {"max_cost_usd": True}, "max_cost_usd = true: a number is expected"),
    # r14e #10: pydantic read `percent = "50"` as 50, the same kind of mistake
    ("canary", {"percent": "50"}, "percent = '50': a number is expected here, not a string"),
    ("canary", {"min_requests": "1"}, "min_requests = '1': a number is expected"),
    ("evaluate", {"margin": "0.1"}, "margin = '0.1': a number is expected"),
    ("finetune", {"max_cost_usd": "5"}, "max_cost_usd = '5': a number is expected"),
    ("finetune", {"wait_timeout_minutes": "60"}, "wait_timeout_minutes = '60': a number"),
])
def test_settings_that_can_never_work_are_refused(section: str, setting: dict[str, float],
                                                   field: str) -> None:
    """r14b #2, #6: non-finite or absurd settings loaded, then crashed every watch (1e12 hours:
    OverflowError; inf: a JSON error) or could never decide; refused when the config loads."""
    data: dict[str, Any] = {**BASE, "finetune": dict(BASE["finetune"])}  # type: ignore[arg-type]
    if section == "finetune":
        data["finetune"].update(setting)
    else:
        data[section] = setting
    with pytest.raises(ConfigError, match=re.escape(field)):
        parse_cycle_config(data)
    data[section] = {"base_model": "m"} if section == "finetune" else {}
    parse_cycle_config(data)  # the same section without it loads
