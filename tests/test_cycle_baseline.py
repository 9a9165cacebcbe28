"""The gate's baseline is the model the alias serves (r14e #5): a fixed `[evaluate] baseline`
that differs from the route's stable model is refused, before any job when the run starts and
again at the evaluate step (the route may change while the job trains); it only stands in for
an alias with no route yet, and may not be the alias itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import ProxyServer, both_stores
from tests.test_cycle import ALIAS, CURRENT, config, loop, run  # noqa: F401
from tuneloop.errors import ConfigError

pytestmark = both_stores

OTHER = "gpt-4o"


def test_a_baseline_other_than_the_alias_model_is_refused_before_any_job(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    loop.upstream.state.model_replies[OTHER] = "I don't know."  # an easy baseline to beat
    cfg = config(tmp_path, evaluate={"baseline": OTHER})
    out = run(loop, cfg)
    # on main: trained, evaluated against gpt-4o (not the model the alias serves), canaried
    assert out.status == "error" and out.run["step"] == "export", out.message
    assert f"serves {CURRENT}" in out.message and "remove `baseline`" in out.message
    assert not loop.upstream.state.jobs


def test_the_alias_model_changed_while_training_is_refused_at_evaluate(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    """The baseline matched when the run started; a person then promoted another model."""
    loop.upstream.state.model_replies[CURRENT] = "I don't know."
    loop.upstream.state.finetune_step_seconds = 0.5
    cfg = config(tmp_path, evaluate={"baseline": CURRENT},
                 finetune={"wait_timeout_minutes": 0.001})
    first = run(loop, cfg)
    assert first.status == "active" and first.run["step"] == "wait", first.message
    loop.admin().promote(ALIAS, OTHER)  # the alias now serves gpt-4o
    deadline = time.monotonic() + 60
    while True:
        out = run(loop, cfg)
        if out.run["step"] != "wait" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # on main: evaluated against gpt-4o-mini (it says "I don't know"), passed, canaried over
    # gpt-4o without ever being compared with it
    assert out.status == "error" and out.run["step"] == "evaluate", out.message
    assert f"serves {OTHER}" in out.message
    assert {t["model"] for t in loop.admin().routes()[ALIAS]["targets"]} == {OTHER}


def test_the_baseline_equal_to_the_alias_model_is_used(
        loop: ProxyServer, tmp_path: Path) -> None:  # noqa: F811
    loop.upstream.state.model_replies[CURRENT] = "I don't know."
    out = run(loop, config(tmp_path, evaluate={"baseline": CURRENT}))
    assert out.run["step"] == "watch" and out.run["state"]["baseline"] == CURRENT, out.message


def test_the_alias_itself_is_no_baseline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the alias itself"):
        config(tmp_path, evaluate={"baseline": ALIAS})
