"""`[finetune] provider = "azure"` is refused when the cycle config is loaded, before any job:
Azure serves a fine-tuned model only once someone deploys it in the resource, so a cycle
would train (and pay) on every run, then stop at `wait` (r14g #4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cycle_config import parse_cycle_config
from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tests.test_trainers import AzurePaths
from tuneloop.cli import main
from tuneloop.errors import ConfigError

AZURE = {"name": "support", "alias": "support-bot", "dataset": {"name": "support"},
         "finetune": {"provider": "azure", "base_model": "gpt-4o-mini-2024-07-18"}}


def test_an_azure_cycle_config_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError, match=r'cycle config: finetune: provider = "azure" cannot '
                                          r"run in a cycle: Azure OpenAI serves a fine-tuned "
                                          r"model only once someone deploys it") as caught:
        parse_cycle_config(AZURE)
    assert caught.value.exit_code == 2
    assert "tuneloop finetune --provider azure" in caught.value.message


def test_an_azure_cycle_starts_no_run_and_no_job(proxy: ProxyServer, tmp_path: Path) -> None:
    state = FakeOpenAIState(finetune_step_seconds=0.002)
    azure = AzurePaths(create_fake_openai(state), "azure-test-key")
    toml = tmp_path / "cycle.toml"
    toml.write_text(f"""
name = "support"
alias = "support-bot"
[dataset]
name = "support"
out_dir = "{tmp_path / 'exports'}"
[finetune]
provider = "azure"
base_model = "gpt-4o-mini-2024-07-18"
""")
    with serve_app(azure) as url:
        env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
               "AZURE_OPENAI_API_KEY": "azure-test-key", "AZURE_OPENAI_ENDPOINT": url}
        result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "cycle",
                                           "--config", str(toml)], env=env)
    assert result.exit_code == 2, result.output
    assert 'provider = "azure" cannot run in a cycle' in " ".join(result.output.split())
    assert azure.seen == [] and not state.jobs  # nothing uploaded, nothing trained
    assert proxy.admin().cycle_runs("support") == []
