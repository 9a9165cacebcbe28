"""The evaluation asks the baseline with the transforms its route gives it. When routes give
the baseline model different transforms (two aliases, or a target and a fallback), the alias
evaluated chooses; with none to choose by, the evaluation refuses with a clear message
instead of silently asking it with no transforms."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exporter.evaluate import EvalOptions, evaluate
from exporter.examples import Example
from exporter.formats import FormatOptions
from exporter.pipeline import ExportOptions, export
from tests.conftest import (
    ADMIN_TOKEN,
    UPSTREAM_KEY,
    ProxyServer,
    module_proxy,
)
from tuneloop.cli import main
from tuneloop.errors import ConfigError

CURRENT = "ft:davinci-002:acme::current"
CANDIDATE = "ft:davinci-002:acme::next"
SEPARATOR = "\n\n###\n\n"


def legacy_target(stop: str) -> dict[str, Any]:
    return {"model": CURRENT, "transforms": [
        {"type": "legacy_separator", "separator": SEPARATOR}, {"type": "stop", "stop": stop}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with module_proxy(tmp_path_factory.mktemp("eval-routes")) as proxy:
        proxy.admin().put_routes({"qa": {"targets": [legacy_target("###")]},
                                  "qa-eu": {"targets": [legacy_target("END")]}})
        yield proxy


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    examples = [Example(f"lx-{i:03d}", [{"role": "user", "content": f"Legacy question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}])
                for i in range(30)]
    out = tmp_path_factory.mktemp("eval-dataset") / "legacy"
    export(examples, out, ExportOptions(name="qa", validation_fraction=0.3, workers=1,
                                        format=FormatOptions("legacy"),
                                        base_model="davinci-002"))
    return out


def asked(proxy: ProxyServer) -> list[dict[str, Any]]:
    return [r.json for r in proxy.upstream.state.requests
            if isinstance(r.json, dict) and r.json.get("model") == CURRENT]


def test_two_routes_with_different_transforms_and_no_alias_are_refused(
        server: ProxyServer, dataset: Path) -> None:
    server.upstream.state.requests.clear()
    with pytest.raises(ConfigError) as caught:
        evaluate(server.admin(), dataset, EvalOptions(CANDIDATE, CURRENT), api_key=UPSTREAM_KEY)
    assert f"the baseline {CURRENT} gets different transforms on qa, qa-eu" in str(caught.value)
    assert "--alias" in str(caught.value)
    assert not server.upstream.state.requests  # refused before asking anything


@pytest.mark.parametrize(("alias", "stop"), [("qa", "###"), ("qa-eu", "END")])
def test_the_alias_evaluated_chooses_the_baselines_transforms(
        server: ProxyServer, dataset: Path, alias: str, stop: str) -> None:
    server.upstream.state.requests.clear()
    evaluate(server.admin(), dataset, EvalOptions(CANDIDATE, CURRENT, alias=alias),
             api_key=UPSTREAM_KEY)
    bodies = asked(server)
    assert bodies and all(b["prompt"].endswith(SEPARATOR) and b["stop"] == stop
                          for b in bodies)


def test_the_cli_takes_the_alias(server: ProxyServer, dataset: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": server.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    args = ["--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(dataset),
            "--candidate", CANDIDATE, "--baseline", CURRENT]
    refused = CliRunner().invoke(main, args, env=env)
    assert refused.exit_code == 2
    assert "gets different transforms on qa, qa-eu" in " ".join(refused.output.split())
    server.upstream.state.requests.clear()
    result = CliRunner().invoke(main, [*args, "--alias", "qa-eu"], env=env)
    assert result.exit_code == 0, result.output
    assert asked(server) and all(b["stop"] == "END" for b in asked(server))


def test_an_alias_that_does_not_route_the_baseline_is_refused_naming_those_that_do(
        server: ProxyServer, dataset: Path, tmp_path: Path) -> None:
    """`--alias support` where support does not route the baseline: never another alias's
    transforms silently; the message names the aliases that do route it."""
    server.upstream.state.requests.clear()
    with pytest.raises(ConfigError) as caught:
        evaluate(server.admin(), dataset, EvalOptions(CANDIDATE, CURRENT, alias="support"),
                 api_key=UPSTREAM_KEY)
    message = str(caught.value)
    assert f"alias 'support' does not route the baseline {CURRENT}" in message
    assert "'qa', 'qa-eu' do" in message and "--alias" in message
    assert not server.upstream.state.requests  # refused before asking anything
    env = {**os.environ, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": server.url,
           "OPENAI_API_KEY": UPSTREAM_KEY}
    refused = CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(dataset),
        "--candidate", CANDIDATE, "--baseline", CURRENT, "--alias", "support"], env=env)
    assert refused.exit_code == 2
    assert "does not route the baseline" in " ".join(refused.output.split())
