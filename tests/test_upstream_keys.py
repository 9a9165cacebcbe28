"""An app's key goes only to the host it chose, the default upstream (outside review r14h #7):
a canary deployed at another host without `api_key_env` received every request with the app's
own `Bearer` key, second opinions of requests drawn for the stable OpenAI model included. A
target at another origin now gets its `api_key_env` key or no key at all; setting one without a
key variable is allowed (a server without auth) with a warning from the API and the CLI."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from proxy.routing import Target
from proxy.upstream_keys import client_credential
from tests.conftest import ADMIN_TOKEN, FakeUpstream, ProxyServer, proxy_settings
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tuneloop.cli import main

HI = [{"role": "user", "content": "hi"}]
ALIAS = "support-bot"
STABLE, CANARY = "stable-model", "canary-model"
APP_KEY = "sk-APP-OWN-OPENAI-KEY"
SERVER_KEY = "sk-SERVER-OPENAI-KEY"


@pytest.fixture
def elsewhere() -> Iterator[FakeUpstream]:
    """A second fake OpenAI-compatible server: another port, so another origin."""
    state = FakeOpenAIState()
    with serve_app(create_fake_openai(state)) as url:
        yield FakeUpstream(url, state)


def credentials(requests: list[Any]) -> set[tuple[str | None, str | None]]:
    return {(r.headers.get("authorization"), r.headers.get("api-key")) for r in requests}


def ask(client: openai.OpenAI, count: int, text: str = "please") -> None:
    for i in range(count):
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(model=ALIAS, user=f"u{i}",
                                           messages=[{"role": "user", "content": text}])


def test_a_canary_at_another_origin_never_gets_the_apps_key(
        proxy_factory: Any, elsewhere: FakeUpstream) -> None:
    proxy = proxy_factory(openai_api_key=SERVER_KEY)
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50, base_url=elsewhere.base_url)
    proxy.upstream.state.fail_containing["please"] = 400  # the stable model refuses: 2nd opinion
    ask(proxy.openai(api_key=APP_KEY), 20)
    ask(proxy.openai(api_key=APP_KEY, default_headers={"api-key": APP_KEY}), 4)
    for i in range(4):  # no key: the server's, to the default upstream only
        proxy.http().post("/v1/chat/completions", json={
            "model": ALIAS, "user": f"k{i}", "messages": [{"role": "user", "content": "please"}]})
    canary_side = elsewhere.state.requests
    assert {r.json["model"] for r in canary_side} == {CANARY}
    assert len(canary_side) >= 20  # its own draws and the stable model's second opinions
    assert credentials(canary_side) == {(None, None)}
    home = {r.headers.get("authorization") for r in proxy.upstream.state.requests}
    assert home == {f"Bearer {APP_KEY}", f"Bearer {SERVER_KEY}"}


def test_a_target_at_another_origin_gets_its_own_key_variable(
        proxy_factory: Any, elsewhere: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CANARY_HOST_KEY", "sk-canary-host")
    proxy = proxy_factory()
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    result = admin.promote(ALIAS, CANARY, canary=50, base_url=elsewhere.base_url,
                           api_key_env="TEST_CANARY_HOST_KEY")
    assert result["warnings"] == []
    ask(proxy.openai(api_key=APP_KEY), 10, "hello")
    assert elsewhere.state.requests
    assert credentials(elsewhere.state.requests) == {("Bearer sk-canary-host", None)}
    assert credentials(proxy.upstream.state.requests) == {(f"Bearer {APP_KEY}", None)}


def test_setting_a_keyless_target_elsewhere_is_allowed_with_a_warning(
        proxy: ProxyServer, elsewhere: FakeUpstream, tmp_path: Path) -> None:
    admin = proxy.admin()
    table, warnings = admin.put_routes_warned({ALIAS: {"targets": [{"model": STABLE}]}})
    assert warnings == [] and [t["model"] for t in table[ALIAS]["targets"]] == [STABLE]
    promoted = admin.promote(ALIAS, CANARY, canary=10, base_url=elsewhere.base_url)
    [warning] = promoted["warnings"]
    assert CANARY in warning and elsewhere.base_url in warning and "no api_key_env" in warning
    assert [t["model"] for t in admin.routes()[ALIAS]["targets"]] == [STABLE, CANARY]

    _, warnings = admin.put_routes_warned(
        {"other-bot": {"targets": [{"model": STABLE}],
                       "fallbacks": [{"model": "local", "base_url": elsewhere.base_url}]}},
        force=True)  # the table drops support-bot and its open canary
    [warning] = warnings
    assert "'other-bot'" in warning and "local" in warning and "no api_key_env" in warning

    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    routes_file = tmp_path / "routes.json"
    routes_file.write_text(json.dumps(
        {ALIAS: {"targets": [{"model": "local", "base_url": elsewhere.base_url}]}}))
    cli = CliRunner()
    db = ["--db", str(tmp_path / "cli.duckdb")]
    set_routes = cli.invoke(main, [*db, "routes", "set", str(routes_file), "--force"], env=env)
    assert set_routes.exit_code == 0, set_routes.output
    assert "warning:" in set_routes.stderr and "no api_key_env" in set_routes.stderr
    promote = cli.invoke(main, [*db, "promote", "--alias", ALIAS, "--model", "local-2",
                                "--base-url", elsewhere.base_url], env=env)
    assert promote.exit_code == 0, promote.output
    assert "warning:" in promote.stderr and "local-2" in promote.stderr


def test_only_a_checked_credential_tells_one_client_from_another(tmp_path: Path) -> None:
    """r14c LOW 6: a canary's per-key share of background opinions was keyed on whatever key
    header came (`x-api-key` included) though nobody checked it. The client is now told by the
    proxy's issued key, or by the app's own key when both arms' upstream gets it; any other
    request is the one anonymous client ("")."""
    at_home = [Target(model=STABLE), Target(model=CANARY)]
    away = [Target(model=STABLE), Target(model=CANARY, base_url="http://127.0.0.2:9/v1")]
    on_its_key = [Target(model=STABLE), Target(model=CANARY, api_key_env="SOME_KEY_VAR")]
    passing = proxy_settings(tmp_path, "http://127.0.0.1:9/v1", openai_api_key=SERVER_KEY)
    issuing = passing.model_copy(update={"issue_keys": True})
    bearer = {"authorization": f"Bearer {APP_KEY}"}
    assert client_credential(passing, {"x-api-key": APP_KEY}, at_home) == ""
    assert client_credential(passing, {}, at_home) == ""
    assert client_credential(passing, bearer, at_home) == APP_KEY
    assert client_credential(passing, {"api-key": APP_KEY}, at_home) == APP_KEY
    assert client_credential(passing, bearer, away) == ""
    assert client_credential(passing, bearer, on_its_key) == ""
    assert client_credential(passing, bearer, []) == ""
    assert client_credential(issuing, {"x-api-key": "tlk-issued"}, away) == "tlk-issued"
    assert client_credential(issuing, bearer, at_home) == APP_KEY


def test_one_own_key_is_one_client_however_its_scheme_is_spelled(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """r14j LOW 5: without issued keys the client key was a digest of the raw `authorization`
    value, so `Bearer sk-x`, `bearer sk-x` and `BEARER  sk-x` (one key to an upstream that
    takes the scheme in any case) were three clients: three times a key's share of background
    opinions, of the missing opinions a promotion must survive, a fresh-key slot beside its
    own. Now they are one client, as the same key in `api-key` is; another key is another."""
    proxy = proxy_factory()
    admin = proxy.admin()
    admin.put_routes({ALIAS: {"targets": [{"model": STABLE}]}})
    admin.promote(ALIAS, CANARY, canary=50)
    spellings = [f"Bearer {APP_KEY}", f"bearer {APP_KEY}", f"BEARER  {APP_KEY}",
                 f"Bearer\t{APP_KEY}", f"Bearer {SERVER_KEY}"]
    with httpx.Client(base_url=proxy.base_url, timeout=10.0) as http:
        for n, value in enumerate(spellings):
            answer = http.post("/chat/completions", headers={"authorization": value},
                               json={"model": ALIAS, "user": f"u{n}", "messages": HI})
            assert answer.status_code == 200, answer.text
        answer = http.post("/chat/completions", headers={"api-key": APP_KEY},
                           json={"model": ALIAS, "user": "u9", "messages": HI})
        assert answer.status_code == 200, answer.text
    rows = proxy.wait_for("SELECT user_id, route ->> 'client_key' FROM interactions "
                          "WHERE traffic = 'production' ORDER BY user_id",
                          lambda r: len(r) == len(spellings) + 1)
    keys = {user: key for user, key in rows}
    assert keys["u0"] and all(keys[f"u{n}"] == keys["u0"] for n in (1, 2, 3, 9)), keys
    assert keys["u4"] and keys["u4"] != keys["u0"], keys
    passing = proxy.settings
    arms = [Target(model=STABLE), Target(model=CANARY)]
    padded = [*spellings[:4], f" Bearer {APP_KEY} ", f"bearer {APP_KEY}\r\n"]
    assert {client_credential(passing, {"authorization": v}, arms) for v in padded} \
        == {APP_KEY}
    assert client_credential(passing, {"authorization": f"Basic  {APP_KEY}"}, arms) \
        == client_credential(passing, {"authorization": f"BASIC {APP_KEY}"}, arms)
