"""`tuneloop promote` and a target's transforms: a promotion naming one transform replaces
that one only; removing one is explicit (`--drop-transform`, `--no-transforms`); the command
says what the model gets. Through the CLI against a real proxy and fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from storage.prompt_templates import freeze_template
from storage.store import migrate_store, open_store
from tests.conftest import ADMIN_TOKEN, FakeUpstream, ProxyServer, proxy_settings, serve_proxy
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.cli import main

BASE = "davinci-002"
FT = "ft:davinci-002:acme::v1"
PREFIX = "Article:\n"
SEPARATOR = "\n\n###\n\n"
CANARY = [{"type": "strip_template", "template": "qa-v1"},
          {"type": "legacy_separator", "separator": SEPARATOR}, {"type": "stop", "stop": " END"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    tmp = tmp_path_factory.mktemp("promote-transforms")
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as upstream_url:
        settings = proxy_settings(tmp, FakeUpstream(upstream_url, state).base_url)
        db = open_store(settings.db)
        migrate_store(db)
        db.write_sync(lambda con: freeze_template(
            con, {"name": "qa", "parts": {"prompt_prefix": PREFIX}}, "test"))
        db.close()
        with serve_proxy(settings) as url:
            proxy = ProxyServer(url, settings, FakeUpstream(upstream_url, state))
            yield proxy
            proxy.close()


def promote(server: ProxyServer, tmp_path: Path, alias: str, *args: str) -> Result:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": server.url}
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "promote",
                                     "--alias", alias, "--model", FT, *args], env=env)


def transforms_of(server: ProxyServer, alias: str) -> list[dict[str, Any]]:
    target = next(t for t in server.admin().routes()[alias]["targets"] if t["model"] == FT)
    return list(target.get("transforms", []))


def start_route(server: ProxyServer, alias: str) -> None:
    """Add `alias` to the module's table, as one who read it just before."""
    read = server.admin().routes_with_seq()
    server.admin().put_routes({**read["routes"], alias: {"targets": [{"model": BASE}]}},
                              expect_seq=read["seq"])


def start_canary(server: ProxyServer, tmp_path: Path, alias: str) -> None:
    start_route(server, alias)
    result = promote(server, tmp_path, alias, "--canary", "10", "--strip-template", "qa-v1",
                     "--prompt-suffix", SEPARATOR, "--stop", " END")
    assert result.exit_code == 0, result.output
    assert transforms_of(server, alias) == CANARY


def test_a_full_promotion_naming_one_transform_keeps_the_others(
        server: ProxyServer, tmp_path: Path) -> None:
    start_canary(server, tmp_path, "qa-a")
    result = promote(server, tmp_path, "qa-a", "--stop", " STOP")
    assert result.exit_code == 0, result.output
    assert transforms_of(server, "qa-a") == [*CANARY[:2], {"type": "stop", "stop": " STOP"}]
    assert (f'{FT} transforms: strip qa-v1, separator "\\n\\n###\\n\\n", stop " STOP" '
            "(kept from the route: strip qa-v1, separator;") in result.output
    # on 100% of the traffic the fine-tune gets what it got in the canary, the new stop aside
    server.openai().completions.create(model="qa-a", prompt=PREFIX + "DuckDB")
    body = server.upstream.state.requests[-1].json
    assert body == {**body, "model": FT, "prompt": "DuckDB" + SEPARATOR, "stop": " STOP"}


def test_a_full_promotion_naming_nothing_keeps_every_transform(
        server: ProxyServer, tmp_path: Path) -> None:
    start_canary(server, tmp_path, "qa-b")
    result = promote(server, tmp_path, "qa-b")
    assert result.exit_code == 0, result.output
    assert transforms_of(server, "qa-b") == CANARY
    assert "kept from the route: strip qa-v1, separator, stop;" in result.output


def test_dropping_a_transform_is_explicit(server: ProxyServer, tmp_path: Path) -> None:
    start_canary(server, tmp_path, "qa-c")
    result = promote(server, tmp_path, "qa-c", "--drop-transform", "prompt-suffix",
                     "--drop-transform", "stop")
    assert result.exit_code == 0, result.output
    assert transforms_of(server, "qa-c") == CANARY[:1]
    assert f"{FT} transforms: strip qa-v1 (kept from the route: strip qa-v1;" in result.output
    history = server.admin().route_history("qa-c")
    assert history[0]["detail"]["drop_transforms"] == ["legacy_separator", "stop"]

    result = promote(server, tmp_path, "qa-c", "--no-transforms", "--stop", " Q")
    assert result.exit_code == 0, result.output
    assert transforms_of(server, "qa-c") == [{"type": "stop", "stop": " Q"}]
    assert f'{FT} transforms: stop " Q"\n' in result.output
    result = promote(server, tmp_path, "qa-c", "--no-transforms")
    assert result.exit_code == 0, result.output
    assert "transforms" not in next(t for t in server.admin().routes()["qa-c"]["targets"])
    assert f"{FT} transforms: none (it gets the app's request as sent)" in result.output


def test_naming_and_dropping_one_transform_is_refused(server: ProxyServer,
                                                      tmp_path: Path) -> None:
    start_canary(server, tmp_path, "qa-d")
    result = promote(server, tmp_path, "qa-d", "--stop", " X", "--drop-transform", "stop")
    assert result.exit_code == 2 and "--drop-transform removes what --stop sets" in result.output
    response = httpx.post(f"{server.url}/admin/routes/qa-d/promote",
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                          json={"model": FT, "stop": " X", "drop_transforms": ["stop"]})
    assert response.status_code == 400
    assert "drop_transforms names ['stop']" in response.json()["error"]["message"]
    response = httpx.post(f"{server.url}/admin/routes/qa-d/promote",
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                          json={"model": FT, "drop_transforms": ["everything"]})
    assert response.status_code == 400
    assert transforms_of(server, "qa-d") == CANARY  # nothing changed


def test_a_replacement_beside_a_template_without_a_system_prompt_is_warned(
        server: ProxyServer, tmp_path: Path) -> None:
    server.admin().freeze_template("wrap", {"user_prefix": "Q: "})
    start_route(server, "qa-e")
    result = promote(server, tmp_path, "qa-e", "--canary", "10", "--strip-template", "wrap-v1",
                     "--system-prompt", "Short.")
    assert result.exit_code == 0, result.output
    assert ("warning: template wrap-v1 has no system prompt, so a request holding the app's "
            "own system message is a template mismatch for ft:davinci-002:acme::v1 "
            "(own_system_prompt") in result.output
    result = promote(server, tmp_path, "qa-e", "--drop-transform", "system-prompt")
    assert result.exit_code == 0 and "warning" not in result.output


def test_promoting_again_a_model_now_in_the_fallbacks_keeps_its_transforms(
        server: ProxyServer, tmp_path: Path) -> None:
    """v1 promoted fully, then v2 (v1 becomes a fallback), then v1 again (a rollback by
    promotion): v1 gets back its own transforms from the fallbacks, not none."""
    start_canary(server, tmp_path, "qa-f")
    assert promote(server, tmp_path, "qa-f").exit_code == 0
    v2 = "ft:davinci-002:acme::v2"
    server.admin().promote("qa-f", v2, strip_template="qa-v1", prompt_suffix=SEPARATOR,
                           stop=" V2")
    route = server.admin().routes()["qa-f"]
    assert [t["model"] for t in route["targets"]] == [v2]
    assert next(t for t in route["fallbacks"] if t["model"] == FT)["transforms"] == CANARY
    result = promote(server, tmp_path, "qa-f")
    assert result.exit_code == 0, result.output
    assert transforms_of(server, "qa-f") == CANARY
    assert "(kept from the route: strip qa-v1, separator, stop" in result.output
    server.openai().completions.create(model="qa-f", prompt=PREFIX + "DuckDB")
    body = server.upstream.state.requests[-1].json
    assert body == {**body, "model": FT, "prompt": "DuckDB" + SEPARATOR, "stop": " END"}
