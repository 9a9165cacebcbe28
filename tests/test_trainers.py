"""More trainers behind the provider interface: Together, Fireworks and Azure OpenAI, each
against a fake built from its API reference on loopback, from upload to a routed model (the
proxy sends an alias's chat to the provider's fake with the provider's key)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result

from exporter.cycle import run_cycle
from exporter.datasets import build_dataset
from exporter.finetune import cancel_job, job_spec, start_job, wait_for_job
from exporter.pipeline import ExportOptions
from exporter.providers.follow import Backoff
from exporter.providers.registry import make_provider
from tests import test_cycle
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.fakes import fireworks_finetune, together_finetune
from tests.fakes.openai_upstream import FakeOpenAIState
from tests.fakes.openai_upstream import create_app as create_fake_openai
from tests.fakes.server import serve_app
from tests.test_cycle import ALIAS, the_current_model_is_worse
from tests.test_cycle import config as cycle_config
from tests.test_export_cli import flat, run_cli
from tests.test_review_api import logged
from tuneloop.config import Settings
from tuneloop.errors import ConfigError, ProviderError, ProviderUnsupported

FAST = Backoff(poll=0.001, idle_max=0.002, initial=0.001, maximum=0.01, give_up_after=10)
loop = test_cycle.loop  # the cycle tests' fixture: approved traffic, the alias routed
TOGETHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
FIREWORKS_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"


@pytest.fixture(scope="module")
def together() -> Iterator[tuple[str, together_finetune.FakeTogetherState]]:
    state = together_finetune.FakeTogetherState()
    with serve_app(together_finetune.create_app(state)) as url:
        yield url + "/v1", state


@pytest.fixture
def export_dir(proxy: ProxyServer, tmp_path: Path) -> Path:
    ids = logged(proxy, *[f"Where is my parcel number {i}?" for i in range(14)])
    proxy.admin(REVIEWER_TOKEN).bulk_review("approve", reviewer="ann", ids=ids)
    out = tmp_path / "exports" / "support-v1"
    build_dataset(proxy.admin(REVIEWER_TOKEN), out,
                  ExportOptions(name="support", validation_fraction=0.2, workers=1))
    return out


def settings(**values: Any) -> Settings:
    return Settings(db=Path("unused.duckdb"), **values)


def chat_through_alias(proxy: ProxyServer, alias: str) -> str:
    reply = proxy.openai().chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "Where is my parcel?"}])
    return str(reply.choices[0].message.content)


def test_a_together_job_runs_from_upload_to_a_routed_model(
        proxy: ProxyServer, export_dir: Path, together: tuple[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = together
    provider = make_provider("together", settings(together_api_key=state.api_key,
                                                  together_base_url=url))
    spec = job_spec(_load(export_dir), TOGETHER_MODEL, suffix="support", epochs=2)
    record = start_job(proxy.admin(), export_dir, spec, provider)
    assert record["provider"] == "together" and record["status"] == "queued"
    uploads = [r for r in state.requests if r.path == "/v1/files/upload"]
    assert len(uploads) == 2 and b'name="purpose"' in uploads[0].body
    created = next(r.json for r in state.requests if r.path == "/v1/fine-tunes")
    assert created["lora"] is True and created["n_epochs"] == 2
    assert created["validation_file"] and created["suffix"] == "support"

    done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
    assert done["status"] == "succeeded", done
    model = done["fine_tuned_model"]
    assert model.startswith("tuneloop-fake/Meta-Llama-3.1-8B-Instruct-Reference-support-")
    # what Together reports: 2 epochs x 1000 tokens at 480 nanodollars a token
    assert done["trained_tokens"] == 2000
    assert done["training_cost_usd"] == pytest.approx(2000 * 480 / 1e9)

    served = provider.deploy(provider.retrieve(record["id"]))  # type: ignore[attr-defined]
    assert (served.model, served.base_url, served.api_key_env) == (model, url,
                                                                   "TOGETHER_API_KEY")
    monkeypatch.setenv("TOGETHER_API_KEY", state.api_key)  # the proxy's environment
    proxy.admin().promote("support-bot", model, **served.promote_args())
    state.requests.clear()
    assert chat_through_alias(proxy, "support-bot")
    chat = [r for r in state.requests if r.path == "/v1/chat/completions"]
    assert [r.json["model"] for r in chat] == [model]
    assert chat[0].headers["authorization"] == f"Bearer {state.api_key}"


def _load(path: Path) -> Any:
    from exporter.exportdir import load_export

    return load_export(path, verify=False)


def test_a_failed_together_job_says_why(proxy: ProxyServer, export_dir: Path,
                                        together: tuple[str, Any]) -> None:
    url, state = together
    provider = make_provider("together", settings(together_api_key=state.api_key,
                                                  together_base_url=url))
    spec = job_spec(_load(export_dir), TOGETHER_MODEL, suffix="fail")
    record = start_job(proxy.admin(), export_dir, spec, provider)
    done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
    assert done["status"] == "failed"
    assert "CUDA out of memory" in done["error"]["message"]


def test_a_together_job_is_followed_through_an_outage_and_cancelled(
        proxy: ProxyServer, export_dir: Path, together: tuple[str, Any]) -> None:
    url, state = together
    provider = make_provider("together", settings(together_api_key=state.api_key,
                                                  together_base_url=url))
    spec = job_spec(_load(export_dir), TOGETHER_MODEL, suffix="cancel-me")
    record = start_job(proxy.admin(), export_dir, spec, provider)
    cancelled = cancel_job(proxy.admin(), record["id"], provider)
    assert cancelled["status"] == "cancelling"
    state.fail_next(2, 503)  # Together is down for the next two calls: following retries
    done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
    assert done["status"] == "cancelled"
    assert [e["message"] for e in proxy.admin().job_events(record["id"])["events"]][-1] == \
        "Fine-tuning job cancelled"


def test_together_errors_name_the_url_and_the_missing_key(tmp_path: Path,
                                                          together: tuple[str, Any]) -> None:
    url, state = together
    with pytest.raises(ConfigError, match="set TOGETHER_API_KEY"):
        make_provider("together", settings())
    wrong = make_provider("together", settings(together_api_key="nope", together_base_url=url))
    with pytest.raises(ProviderError, match=rf"GET {url}/fine-tunes/ft-x\).*401"):
        wrong.retrieve("ft-x")
    provider = make_provider("together", settings(together_api_key=state.api_key,
                                                  together_base_url=url))
    with pytest.raises(ProviderUnsupported, match="checkpoints are downloads"):
        provider.checkpoints("ft-x")
    with pytest.raises(ProviderUnsupported, match="not learning_rate_multiplier"):
        provider.create(_files(), _spec(learning_rate_multiplier=2.0))


def _files() -> Any:
    from exporter.providers.base import UploadedFiles

    return UploadedFiles("file-1", None)


def _spec(**hyper: Any) -> Any:
    from exporter.providers.base import JobSpec

    return JobSpec(TOGETHER_MODEL, hyperparameters=hyper)


def test_the_cli_takes_a_provider(proxy: ProxyServer, export_dir: Path, tmp_path: Path,
                                  together: tuple[str, Any]) -> None:
    url, state = together

    def cli(*args: str, **env: str) -> Result:
        return run_cli(proxy, tmp_path, *args, token=ADMIN_TOKEN, COLUMNS="200",
                       TUNELOOP_TOGETHER_BASE_URL=url, **env)

    missing = cli("finetune", "--provider", "together", "--dataset", str(export_dir),
                  "--base-model", TOGETHER_MODEL)
    assert missing.exit_code == 2 and "set TOGETHER_API_KEY" in flat(missing.output)
    started = cli("finetune", "--provider", "together", "--dataset", str(export_dir),
                  "--base-model", TOGETHER_MODEL, "--wait", "--poll", "0.001",
                  TOGETHER_API_KEY=state.api_key)
    assert started.exit_code == 0, started.output
    job_id = started.output.split()[0]
    assert job_id.startswith("ft-") and "succeeded" in started.output
    assert f"tuneloop jobs serve {job_id} --promote ALIAS" in flat(started.output)
    listed = cli("jobs", "list", TOGETHER_API_KEY=state.api_key)
    assert job_id in listed.output
    followed = cli("jobs", "follow", job_id, "--poll", "0.001",
                   TOGETHER_API_KEY=state.api_key)  # the record says together
    assert followed.exit_code == 0 and "succeeded" in followed.output, followed.output
    checkpoints = cli("jobs", "checkpoints", job_id, TOGETHER_API_KEY=state.api_key)
    assert checkpoints.exit_code == 6, checkpoints.output  # asked at Together, not OpenAI
    assert "checkpoints are downloads" in flat(checkpoints.output)
    served = cli("jobs", "serve", job_id, "--promote", "together-bot",
                 TOGETHER_API_KEY=state.api_key)
    assert served.exit_code == 0, served.output
    [target] = proxy.admin().routes()["together-bot"]["targets"]
    assert (target["base_url"], target["api_key_env"]) == (url, "TOGETHER_API_KEY")
    assert f"--base-url {url} --api-key-env TOGETHER_API_KEY" in flat(cli(
        "jobs", "serve", job_id, TOGETHER_API_KEY=state.api_key).output)


@pytest.fixture(scope="module")
def fireworks() -> Iterator[tuple[str, Any]]:
    state = fireworks_finetune.FakeFireworksState()
    with serve_app(fireworks_finetune.create_app(state)) as url:
        yield url, state


def fireworks_settings(url: str, state: Any, **values: Any) -> Settings:
    """The fake's settings; its LoRA deployments are polled every 10 ms (a read advances
    them: tests/fakes/fireworks_finetune.py)."""
    return settings(**{"fireworks_api_key": state.api_key,
                       "fireworks_account_id": state.account, "fireworks_base_url": url,
                       "fireworks_inference_url": f"{url}/inference/v1",
                       "fireworks_deploy_poll_s": 0.01, **values})


def test_a_fireworks_job_runs_from_upload_to_a_routed_model(
        proxy: ProxyServer, export_dir: Path, fireworks: tuple[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = fireworks
    provider = make_provider("fireworks", fireworks_settings(url, state))
    spec = job_spec(_load(export_dir), FIREWORKS_MODEL, suffix="Support Bot", epochs=2)
    record = start_job(proxy.admin(), export_dir, spec, provider)
    assert record["provider"] == "fireworks"
    root = f"/v1/accounts/{state.account}"
    paths = [r.path for r in state.requests if r.method == "POST"]
    assert paths[0] == f"{root}/datasets" and paths[1].endswith(":upload")
    created = next(r.json for r in state.requests if r.path == f"{root}/supervisedFineTuningJobs")
    assert created["epochs"] == 2
    assert created["evaluationDataset"].startswith(f"accounts/{state.account}/datasets/")
    assert created["outputModel"].startswith(f"accounts/{state.account}/models/support-bot-")

    done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
    assert done["status"] == "succeeded", done
    model = done["fine_tuned_model"]
    assert model == created["outputModel"]

    monkeypatch.setenv("FIREWORKS_API_KEY", state.api_key)  # the proxy's environment
    served = provider.deploy(provider.retrieve(record["id"]))  # type: ignore[attr-defined]
    assert served.base_url == f"{url}/inference/v1" and served.api_key_env == "FIREWORKS_API_KEY"
    assert model in state.deployed
    proxy.admin().promote("support-bot", model, **served.promote_args())
    state.requests.clear()
    assert chat_through_alias(proxy, "support-bot")
    chat = [r for r in state.requests if r.path == "/inference/v1/chat/completions"]
    assert [r.json["model"] for r in chat] == [model]
    assert chat[0].headers["authorization"] == f"Bearer {state.api_key}"

    again = make_provider("fireworks", fireworks_settings(url, state)).upload(
        _load(export_dir).train, None)  # the same file again: its dataset is reused
    assert again.training_file == created["dataset"]


def test_fireworks_failures_and_errors_are_clear(proxy: ProxyServer, export_dir: Path,
                                                 fireworks: tuple[str, Any]) -> None:
    url, state = fireworks
    provider = make_provider("fireworks", fireworks_settings(url, state))
    spec = job_spec(_load(export_dir), FIREWORKS_MODEL, suffix="fail")
    record = start_job(proxy.admin(), export_dir, spec, provider)
    done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
    assert done["status"] == "failed" and "loss is NaN" in done["error"]["message"]
    with pytest.raises(ConfigError, match="set FIREWORKS_ACCOUNT_ID"):
        make_provider("fireworks", settings(fireworks_api_key="k"))
    with pytest.raises(ConfigError, match="set FIREWORKS_API_KEY"):
        make_provider("fireworks", settings(fireworks_account_id="a"))
    other = make_provider("fireworks", fireworks_settings(url, state).model_copy(
        update={"fireworks_account_id": "someone-else"}))
    with pytest.raises(ProviderError, match=rf"GET {url}/v1/accounts/someone-else/"
                                            r"supervisedFineTuningJobs/x\).*403"):
        other.retrieve("x")
    with pytest.raises(ProviderUnsupported, match="no per-step metrics"):
        provider.results(record["id"])


class AzurePaths:
    """The fake OpenAI served the way Azure OpenAI serves its API: `/openai/<path>` with an
    `api-version` query and an `api-key` header (anything else is refused as Azure does),
    recording what the SDK sent."""

    def __init__(self, app: Any, key: str):
        self.app, self.key = app, key
        self.seen: list[tuple[str, str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        self.seen.append((scope["method"], scope["path"], query))
        if not scope["path"].startswith("/openai/") or "api-version=" not in query:
            return await _refuse(send, 404, "Resource not found")
        if headers.get("api-key") != self.key:
            return await _refuse(send, 401, "Access denied due to invalid subscription key")
        path = "/v1/" + scope["path"].removeprefix("/openai/")
        await self.app({**scope, "path": path, "raw_path": path.encode()}, receive, send)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = orjson.dumps({"error": {"code": str(status), "message": message}})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def test_an_azure_job_runs_through_the_azure_client(proxy: ProxyServer,
                                                    export_dir: Path) -> None:
    state = FakeOpenAIState(finetune_step_seconds=0.002)
    azure = AzurePaths(create_fake_openai(state), "azure-test-key")
    with serve_app(azure) as url:
        with pytest.raises(ConfigError, match="set AZURE_OPENAI_ENDPOINT"):
            make_provider("azure", settings(azure_openai_api_key="azure-test-key"))
        provider = make_provider("azure", settings(azure_openai_api_key="azure-test-key",
                                                   azure_openai_endpoint=url))
        spec = job_spec(_load(export_dir), "gpt-4o-mini-2024-07-18", suffix="support")
        record = start_job(proxy.admin(), export_dir, spec, provider)
        assert record["provider"] == "azure"
        done = wait_for_job(proxy.admin(), record["id"], provider, backoff=FAST)
        assert done["status"] == "succeeded" and done["fine_tuned_model"], done
        assert done["curves"]["steps"]  # the result file, read through Azure's paths
        paths = {(method, path) for method, path, _ in azure.seen}
        assert ("POST", "/openai/files") in paths
        assert ("POST", "/openai/fine_tuning/jobs") in paths
        assert all("api-version=2024-10-21" in query for _, _, query in azure.seen)
        wrong = make_provider("azure", settings(azure_openai_api_key="nope",
                                                azure_openai_endpoint=url))
        with pytest.raises(ProviderError, match=rf"GET {url}/openai/fine_tuning/jobs/x"):
            wrong.retrieve("x")
        with pytest.raises(ProviderUnsupported, match="deployed in your resource"):
            provider.deploy(provider.retrieve(record["id"]))  # type: ignore[attr-defined]


def test_a_cycle_trains_at_together_and_canaries_the_routed_model(
        loop: ProxyServer, tmp_path: Path, together: tuple[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = together
    the_current_model_is_worse(loop)
    monkeypatch.setenv("TOGETHER_API_KEY", state.api_key)  # the proxy's environment
    cfg = cycle_config(tmp_path, finetune={"provider": "together", "base_model": TOGETHER_MODEL,
                                           "hyperparameters": {"n_epochs": 1}})
    made = settings(together_api_key=state.api_key, together_base_url=url)
    mark = len(state.requests)
    outcome = run_cycle(loop.admin(), cfg, api_key=UPSTREAM_KEY,
                        providers=lambda name: make_provider(name, made))
    assert outcome.status == "active", outcome.message  # the canary is being watched
    job = loop.admin().job(outcome.run["state"]["job_id"])
    assert job["provider"] == "together" and job["status"] == "succeeded"
    model = job["fine_tuned_model"]
    routes = loop.admin().routes()
    target = {"model": model, "base_url": url, "api_key_env": "TOGETHER_API_KEY"}
    assert target.items() <= routes[model]["targets"][0].items()  # evaluation reached it
    canary = next(t for t in routes[ALIAS]["targets"] if t["model"] == model)
    assert target.items() <= canary.items()
    asked = [r for r in state.requests[mark:] if r.path == "/v1/chat/completions"]
    assert asked and all(r.json["model"] == model for r in asked)
