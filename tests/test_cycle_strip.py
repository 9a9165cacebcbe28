"""A cycle that trains without a frozen prompt template (`[dataset] strip_template`) opens its
canary with the same strip transform: through the proxy and the fake upstream, the fine-tuned
model gets the request without the template, the current model the app's request whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.cycle import run_cycle
from exporter.cycle_config import parse_cycle_config
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.test_route_transforms import FEW_SHOT, SYSTEM, app_messages
from tuneloop.errors import ConfigError

ALIAS = "support-bot"
CURRENT = "gpt-4o-mini"
# the system prompt and the few-shot turns (the fake echoes the user message, so the answers
# the model trains on stay the current model's)
PARTS = {"system_prompt": SYSTEM, "few_shot": FEW_SHOT}


def sent(proxy: ProxyServer, model: str, since: int) -> list[dict[str, Any]]:
    return [r.json for r in proxy.upstream.state.requests[since:]
            if r.path == "/v1/chat/completions" and r.json.get("model") == model]


def test_a_cycle_trained_without_the_template_canaries_with_its_strip(
        proxy: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = proxy.openai()
    for i in range(40):
        client.chat.completions.create(model=CURRENT,
                                       messages=app_messages(f"Where is order {i}?"))
    proxy.wait_logged(40)
    assert proxy.admin().bulk_review("approve", reviewer="rita",
                                     filter={"review": "pending"})["counts"] == {"ok": 40}
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT}]}})
    frozen = proxy.admin().freeze_template("support-bot", PARTS, alias=ALIAS)
    ref = f"{frozen['name']}-v{frozen['version']}"
    proxy.upstream.state.finetune_step_seconds = 0.02
    proxy.upstream.state.model_replies[CURRENT] = "I don't know."  # the candidate wins
    monkeypatch.setenv("OPENAI_BASE_URL", proxy.upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    cfg = parse_cycle_config({
        "name": "support", "alias": ALIAS,
        "dataset": {"name": "support", "validation": 0.3, "out_dir": str(tmp_path / "exports"),
                    "strip_template": ref, "system_prompt": "You are ACME's bot."},
        "finetune": {"base_model": "gpt-4o-mini-2024-07-18", "suffix": "support",
                     "poll_seconds": 0.02},
        "evaluate": {"margin": 0.1},
        "canary": {"percent": 50, "min_requests": 1000}})

    result = run_cycle(proxy.admin(), cfg, api_key=UPSTREAM_KEY)
    assert result.run["step"] == "watch", result.message
    model = result.run["state"]["fine_tuned_model"]
    train = (Path(result.run["state"]["export_path"]) / "train.jsonl").read_text()
    assert SYSTEM.strip() not in train and FEW_SHOT[1]["content"] not in train  # without it

    spec = proxy.admin().routes()[ALIAS]
    candidate = next(t for t in spec["targets"] if t["model"] == model)
    assert {"type": "strip_template", "template": ref} in candidate["transforms"]
    stable = next(t for t in spec["targets"] if t["model"] == CURRENT)
    assert not stable.get("transforms")

    mark = len(proxy.upstream.state.requests)
    for n in range(16):  # sticky users: the same split on every run
        client.chat.completions.create(model=ALIAS, messages=app_messages(f"Order {n}?"),
                                       extra_headers={"x-tuneloop-user": f"user-{n}"})
    to_model, to_current = sent(proxy, model, mark), sent(proxy, CURRENT, mark)
    assert to_model and to_current
    for body in to_model:  # the template out, the replacement system prompt in
        assert body["messages"][0] == {"role": "system", "content": "You are ACME's bot."}
        assert SYSTEM.strip() not in str(body) and len(body["messages"]) == 2
    for body in to_current:  # the app's request as sent
        assert body["messages"][0]["content"] == SYSTEM and len(body["messages"]) == 4


def test_strip_options_are_checked() -> None:
    base = {"name": "s", "alias": "a", "finetune": {"base_model": "gpt-4o-mini-2024-07-18"}}
    with pytest.raises(ConfigError, match="set strip_template"):
        parse_cycle_config({**base, "dataset": {"name": "s", "system_prompt": "Hi."}})
    with pytest.raises(ConfigError, match="does not apply"):
        parse_cycle_config({**base, "dataset": {"name": "s", "format": "preference",
                                                "strip_template": "t-v1"}})
