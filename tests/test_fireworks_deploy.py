"""A Fireworks LoRA is loaded (`POST /deployedModels`) DEPLOYING and served only once DEPLOYED
(https://fireworks.ai/docs/api-reference/get-deployed-model): serving it waits for that, so
the cycle never evaluates a model that answers 404 (r14g #3). Against the fake Fireworks on
loopback, whose deployed models advance one state per read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.cycle import run_cycle
from exporter.finetune import job_spec, start_job, wait_for_job
from exporter.providers.registry import make_provider
from tests import test_cycle
from tests.conftest import UPSTREAM_KEY, ProxyServer
from tests.fakes import fireworks_finetune
from tests.fakes.server import serve_app
from tests.test_cycle import config as cycle_config
from tests.test_cycle import the_current_model_is_worse
from tests.test_trainers import FAST, FIREWORKS_MODEL, fireworks_settings
from tuneloop.errors import ProviderError

loop = test_cycle.loop  # approved traffic, the alias on the current model


@pytest.fixture
def fireworks() -> Iterator[tuple[str, fireworks_finetune.FakeFireworksState]]:
    state = fireworks_finetune.FakeFireworksState()
    with serve_app(fireworks_finetune.create_app(state)) as url:
        yield url, state


def _inference(state: Any) -> list[Any]:
    return [r for r in state.requests if r.path == "/inference/v1/chat/completions"]


def test_the_cycle_evaluates_a_fireworks_lora_only_once_it_is_deployed(
        loop: ProxyServer, tmp_path: Path, fireworks: tuple[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = fireworks
    state.deploy_reads = 4  # DEPLOYING for three reads of the deployed model
    the_current_model_is_worse(loop)
    monkeypatch.setenv("FIREWORKS_API_KEY", state.api_key)  # the proxy's environment
    cfg = cycle_config(tmp_path, finetune={"provider": "fireworks",
                                           "base_model": FIREWORKS_MODEL,
                                           "hyperparameters": {"n_epochs": 1}})
    made = fireworks_settings(url, state)
    outcome = run_cycle(loop.admin(), cfg, api_key=UPSTREAM_KEY,
                        providers=lambda name: make_provider(name, made))
    assert outcome.status == "active", outcome.message  # a canary, not `not_promoted`
    model = outcome.run["state"]["fine_tuned_model"]
    polls = [r for r in state.requests
             if r.method == "GET" and "/deployedModels/" in r.path]
    assert len(polls) == 4  # it waited until DEPLOYED
    asked = _inference(state)
    assert asked and {r.json["model"] for r in asked} == {model}
    report = loop.admin().eval_run(outcome.run["state"]["eval_run_id"])["report"]
    assert report["models"]["candidate"]["errors"] == 0
    assert report["models"]["candidate"]["score"] == 1.0


def _succeeded_job(proxy: ProxyServer, export_dir: Path, provider: Any) -> Any:
    from exporter.exportdir import load_export

    spec = job_spec(load_export(export_dir, verify=False), FIREWORKS_MODEL, suffix="support")
    record = start_job(proxy.admin(), export_dir, spec, provider)
    done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
    assert done["status"] == "succeeded", done
    return provider.retrieve(record["id"])


def test_a_lora_not_deployed_in_time_or_failing_is_a_clear_error(
        loop: ProxyServer, tmp_path: Path, fireworks: tuple[str, Any]) -> None:
    url, state = fireworks
    first = run_cycle(loop.admin(), cycle_config(tmp_path), api_key=UPSTREAM_KEY)
    export_dir = Path(first.run["state"]["export_path"])
    provider = make_provider("fireworks", fireworks_settings(
        url, state, fireworks_deploy_timeout_s=0.05))
    job = _succeeded_job(loop, export_dir, provider)
    state.deploy_reads = 10**6  # never DEPLOYED
    with pytest.raises(ProviderError, match=r"still DEPLOYING at Fireworks after 0\.05s "
                                            r"\(deployed model accounts/tuneloop-fake/"
                                            r"deployedModels/.*the cycle tries again"):
        provider.deploy(job)  # type: ignore[attr-defined]
    assert job.fine_tuned_model not in state.deployed
    assert not _inference(state)

    # loaded before (409): the wait goes on with that deployed model, found by the model
    state.deploy_reads = 0
    again = make_provider("fireworks", fireworks_settings(url, state))
    served = again.deploy(job)  # type: ignore[attr-defined]
    assert served.model == job.fine_tuned_model and job.fine_tuned_model in state.deployed
    model_id = job.fine_tuned_model.rsplit("/", 1)[-1]
    assert any(r.path.endswith(f"/models/{model_id}") for r in state.requests)

    # a deployment that ends in an error says so, and never waits out the timeout
    state.deploy_reads, state.deploy_failure = 2, "no capacity for this base model"
    other = _succeeded_job(loop, export_dir, again)
    with pytest.raises(ProviderError, match=r"is UNDEPLOYING \(INTERNAL: no capacity for this "
                                            r"base model\): it will not serve the model"):
        again.deploy(other)  # type: ignore[attr-defined]
