"""`tuneloop jobs checkpoints --promote` routes the best checkpoint with the transforms its
evaluation gave it (review r14 #9): a model trained without a frozen template gets the strip
and the replacement system prompt, as the cycle's canary does, and the command says that
nothing watches the canary it opened. Real proxy, the fake OpenAI with checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cycle import run_cycle
from exporter.cycle_config import parse_cycle_config
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_cycle_strip import ALIAS, CURRENT, PARTS, sent
from tests.test_route_transforms import SYSTEM, app_messages
from tuneloop.cli import main


def test_a_promoted_checkpoint_gets_the_exports_transforms(
        proxy: ProxyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = proxy.openai()
    for i in range(40):
        client.chat.completions.create(model=CURRENT,
                                       messages=app_messages(f"Where is order {i}?"))
    proxy.wait_logged(40)
    proxy.admin().bulk_review("approve", reviewer="rita", filter={"review": "pending"})
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT}]}})
    frozen = proxy.admin().freeze_template("support-bot", PARTS, alias=ALIAS)
    ref = f"{frozen['name']}-v{frozen['version']}"
    proxy.upstream.state.finetune_step_seconds = 0.02
    proxy.upstream.state.model_replies[CURRENT] = "I don't know."  # the checkpoints win
    monkeypatch.setenv("OPENAI_BASE_URL", proxy.upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    cfg = parse_cycle_config({
        "name": "support", "alias": ALIAS,
        "dataset": {"name": "support", "validation": 0.3, "out_dir": str(tmp_path / "exports"),
                    "strip_template": ref, "system_prompt": "You are ACME's bot."},
        "finetune": {"base_model": "gpt-4o-mini-2024-07-18", "poll_seconds": 0.02},
        "evaluate": {"margin": 0.1, "min_discordant": 5}})
    trained = run_cycle(proxy.admin(), cfg, api_key=UPSTREAM_KEY)
    assert trained.run["state"].get("job_id"), trained.message
    [job] = proxy.upstream.state.jobs.values()
    proxy.admin().put_routes({ALIAS: {"targets": [{"model": CURRENT}]}},
                             force=True)  # no canary yet (the route reset)

    promoted = CliRunner().invoke(main, [
        "jobs", "checkpoints", job.id, "--dataset", trained.run["state"]["export_path"],
        "--baseline", CURRENT, "--promote", ALIAS, "--checkpoints", "1",
        "--min-discordant", "5", "--api", proxy.url], env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert promoted.exit_code == 0, promoted.output
    model = f"{job.model_name()}:ckpt-step-10"
    said = " ".join(promoted.output.split())
    assert f"promoted {model} (step 10) as a 10% canary on {ALIAS}" in said
    target = next(t for t in proxy.admin().routes()[ALIAS]["targets"] if t["model"] == model)
    assert {"type": "strip_template", "template": ref} in target["transforms"]
    assert "nothing watches this canary" in said and f"tuneloop rollback --alias {ALIAS}" in said

    mark = len(proxy.upstream.state.requests)
    for n in range(300):  # until a user lands on the 10% canary (0.9^300: never all miss)
        client.chat.completions.create(model=ALIAS, messages=app_messages(f"Order {n}?"),
                                       extra_headers={"x-tuneloop-user": f"user-{n}"})
        if to_model := sent(proxy, model, mark):
            break
    assert to_model
    for body in to_model:  # what it was trained and evaluated on: no template, its prompt
        assert body["messages"][0] == {"role": "system", "content": "You are ACME's bot."}
        assert SYSTEM.strip() not in str(body) and len(body["messages"]) == 2
