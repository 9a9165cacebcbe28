"""The CLI's gates hold the cycle's floors (outside review): `evaluate --confidence` below the
gate's 0.8 (the cycle config refuses it), and `jobs checkpoints --promote` gated against a
baseline that is not the model the alias serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tuneloop.cli import main

ALIAS = "support-bot"
STABLE, OTHER = "stable-model", "some-weaker-model"


@pytest.mark.parametrize("confidence", ["0.51", "0.79"])
def test_evaluate_refuses_a_confidence_below_the_gates_floor(
        tmp_path: Path, confidence: str) -> None:
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(tmp_path),
        "--candidate", "ft:x", "--baseline", STABLE, "--confidence", confidence,
        "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert "too low for a gate" in result.output and "use at least 0.8" in result.output


def test_checkpoints_promote_gates_against_the_alias_model_only(
        proxy: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", proxy.upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    result = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "jobs", "checkpoints", "ftjob-1",
        "--dataset", str(tmp_path), "--baseline", OTHER, "--promote", ALIAS,
        "--api", proxy.url], env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert f"--baseline {OTHER}, but the alias '{ALIAS}' serves {STABLE}" in said
    assert proxy.admin().routes()[ALIAS]["targets"] == [{"model": STABLE, "weight": 100.0,
                                                         "provider": "openai"}]
