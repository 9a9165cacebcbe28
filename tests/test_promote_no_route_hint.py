"""A canary asked on an alias with no route is refused with the commands that create the
route and then start the canary: run as printed (split as a shell splits them), they give the
canary the target and transforms that were asked (a Together model's server and key variable,
a stop sequence, a system prompt), never a bare model name sent to the default upstream."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ProxyServer
from tests.test_export_cli import flat, run_cli
from tests.test_trainers import TOGETHER_MODEL, export_dir, together

__all__ = ["export_dir", "together"]  # fixtures


def printed_commands(output: str) -> list[list[str]]:
    commands = re.findall(r"`(tuneloop promote [^`]*)`", output)  # as printed, unwrapped
    assert len(commands) == 2, output
    return [shlex.split(command)[1:] for command in commands]


def run_printed(proxy: ProxyServer, tmp_path: Path, output: str, **env: str) -> None:
    for command in printed_commands(output):
        done = run_cli(proxy, tmp_path, *command, **env)
        assert done.exit_code == 0, done.output


def test_the_printed_commands_route_a_together_canary_to_together(
        proxy: ProxyServer, export_dir: Path, tmp_path: Path,
        together: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = together
    monkeypatch.setenv("TOGETHER_API_KEY", state.api_key)  # the proxy's environment
    env = {"TUNELOOP_TOGETHER_BASE_URL": url, "TOGETHER_API_KEY": state.api_key}
    trained = run_cli(proxy, tmp_path, "finetune", "--provider", "together", "--dataset",
                      str(export_dir), "--base-model", TOGETHER_MODEL, "--wait", "--poll",
                      "0.001", **env)
    assert trained.exit_code == 0, trained.output
    job = trained.output.split()[0]
    model = proxy.admin().job(job)["fine_tuned_model"]
    refused = run_cli(proxy, tmp_path, "jobs", "serve", job, "--promote", "tg-bot",
                      "--canary", "50", **env)
    assert refused.exit_code == 5 and "'tg-bot' has no route yet" in flat(refused.output)
    run_printed(proxy, tmp_path, refused.output, **env)

    [stable, canary] = proxy.admin().routes()["tg-bot"]["targets"]
    assert (stable["model"], stable["weight"]) == ("tg-bot", 50)
    assert (canary["model"], canary["base_url"], canary["api_key_env"], canary["weight"]) == (
        model, url, "TOGETHER_API_KEY", 50)
    mark = len(state.requests)
    client = proxy.openai()
    for n in range(20):
        client.chat.completions.create(model="tg-bot", extra_headers={"x-tuneloop-user": f"u{n}"},
                                       messages=[{"role": "user", "content": "hi"}])
    assert any(r.path == "/v1/chat/completions" for r in state.requests[mark:])
    assert model not in [r.json.get("model") for r in proxy.upstream.state.requests
                         if isinstance(r.json, dict)]


@pytest.mark.parametrize(("model", "asked", "transforms"), [
    ("ft:gpt-4o-mini-2024-07-18:acme:x:c1",  # `:x:` is printed as written, not as an emoji
     ["--stop", "END", "--stop", "</s>", "--system-prompt", "Answer in one line; don't 'shout'."],
     {"stop": {"type": "stop", "stop": ["END", "</s>"]},
      "replace_system_prompt": {"type": "replace_system_prompt",
                                "system_prompt": "Answer in one line; don't 'shout'."}}),
    ("ft:davinci-002:acme::c2",  # a legacy model: the separator holds newlines
     ["--prompt-suffix", "\n\n###\n\n", "--stop", " END"],
     {"legacy_separator": {"type": "legacy_separator", "separator": "\n\n###\n\n"},
      "stop": {"type": "stop", "stop": " END"}}),
])
def test_the_printed_canary_keeps_its_transforms(proxy: ProxyServer, tmp_path: Path,
                                                 model: str, asked: list[str],
                                                 transforms: dict[str, Any]) -> None:
    refused = run_cli(proxy, tmp_path, "promote", "--alias", "nobot", "--model", model,
                      "--canary", "5", *asked, COLUMNS="80")
    assert refused.exit_code == 5 and "'nobot' has no route yet" in flat(refused.output)
    run_printed(proxy, tmp_path, refused.output)
    [_stable, canary] = proxy.admin().routes()["nobot"]["targets"]
    assert canary["model"] == model and canary["weight"] == 5
    assert {t["type"]: t for t in canary["transforms"]} == transforms


@pytest.mark.parametrize("asked", [
    ["--prompt-suffix", "\n\n###\n\n", "--system-prompt", "Be brief."],
    ["--strip-template", "nosuch-v1"],
], ids=["legacy-and-chat", "unknown-template"])
def test_options_that_cannot_work_are_refused_before_any_hint(
        proxy: ProxyServer, tmp_path: Path, asked: list[str]) -> None:
    """r14c LOW 8: a canary on an alias with no route was refused with the commands to run
    even when its options could not go together (a legacy separator beside a chat system
    prompt): the first printed command made the route, the second failed. The options are
    checked first: the refusal is theirs (exit 2), with no command printed and no route."""
    refused = run_cli(proxy, tmp_path, "promote", "--alias", "nobot", "--model",
                      "ft:gpt-4o-mini:acme::c3", "--canary", "5", *asked)
    said = flat(refused.output)
    assert refused.exit_code == 2, refused.output
    assert "has no route yet" not in said and "tuneloop promote" not in said, said
    assert "either chat or legacy" in said or "unknown template" in said, said
    assert "nobot" not in proxy.admin().routes()
