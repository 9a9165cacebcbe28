"""`tuneloop cycle` shows the warnings its promotions got from the server (issue 14): the
current model served at another server without `api_key_env` gets no key, and the canary's
promotion (and the full one after it) say so. Before, the cycle dropped them: they are printed,
given in `--json`, and kept in the step's stored detail."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.test_cycle import ALIAS, CURRENT, send, wait_production
from tuneloop.cli import main

loop = test_cycle.loop  # the fixture: approved traffic, the alias, fast fake fine-tuning


def test_the_cycle_shows_and_keeps_its_promotions_warnings(loop: ProxyServer,
                                                            tmp_path: Path) -> None:
    elsewhere = loop.upstream.base_url.replace("127.0.0.1", "localhost")
    loop.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT, "base_url": elsewhere}]}},
                            expect_seq=loop.admin().routes_with_seq()["seq"])
    loop.upstream.state.model_replies[CURRENT] = "I don't know."  # the candidate wins
    toml = tmp_path / "cycle.toml"
    toml.write_text(f"""
name = "support"
alias = "{ALIAS}"
[dataset]
name = "support"
validation = 0.3
out_dir = "{tmp_path / 'exports'}"
[finetune]
base_model = "gpt-4o-mini-2024-07-18"
poll_seconds = 0.02
[evaluate]
margin = 0.5
min_discordant = 5
[canary]
percent = 50
min_requests = 5
bad_error_rate_increase = 0.3
""")
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": loop.url}
    args = ["--db", str(tmp_path / "cli.duckdb"), "cycle", "--config", str(toml)]
    keyless = f"route '{ALIAS}': {CURRENT} at {elsewhere} has no api_key_env"

    first = CliRunner().invoke(main, args, env=env)
    assert first.exit_code == 0, first.output
    assert "active: waiting at watch" in first.output
    assert f"warning: {keyless}" in " ".join(first.output.split())
    [run] = loop.admin().cycle_runs("support")
    [canary] = [s for s in loop.admin().cycle_run(run["id"])["steps"] if s["step"] == "canary"]
    assert any(keyless in text for text in canary["detail"]["warnings"]), canary["detail"]

    send(loop, 20)
    wait_production(loop, 20)
    second = CliRunner().invoke(main, [*args, "--json"], env=env)
    assert second.exit_code == 0, second.output
    printed = json.loads(second.stdout.strip().splitlines()[-1])
    assert printed["status"] == "finished" and printed["outcome"] == "promoted", printed
    assert printed["run"] == run["id"]
    assert any(keyless in text for text in printed["warnings"]), printed
    [watch] = [s for s in loop.admin().cycle_run(run["id"])["steps"]
               if s["step"] == "watch" and s["status"] == "done"]
    assert watch["detail"]["warnings"] == printed["warnings"]
