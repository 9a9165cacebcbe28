"""`tuneloop evaluate` with no key of its own: the requests go without one and the proxy uses
its own upstream key; where the proxy wants a key the CLI has not got, a clear message and an
exit code, never a raw TypeError."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, ProxyServer
from tests.test_evaluate import BASELINE, CANDIDATE, make_export
from tuneloop.cli import main


def evaluate_cli(proxy: ProxyServer, tmp_path: Path, data: Path, *args: str) -> Result:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url,
           "OPENAI_API_KEY": None}  # the CLI has no key of its own
    return CliRunner().invoke(main, [
        "--db", str(tmp_path / "cli.duckdb"), "evaluate", "--dataset", str(data),
        "--candidate", CANDIDATE, "--baseline", BASELINE, "--limit", "4", *args], env=env)


def test_no_key_lets_the_proxy_use_its_own(proxy_factory: Callable[..., ProxyServer],
                                           tmp_path: Path) -> None:
    proxy = proxy_factory(openai_api_key=UPSTREAM_KEY)
    data = make_export(tmp_path / "qa")
    result = evaluate_cli(proxy, tmp_path, data)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "margin" in result.output
    sent = [r for r in proxy.upstream.state.requests if r.path == "/v1/chat/completions"]
    assert len(sent) == 8
    assert all(r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}" for r in sent)


def test_a_key_the_proxy_needs_is_asked_for_clearly(
        proxy_factory: Callable[..., ProxyServer], tmp_path: Path) -> None:
    proxy = proxy_factory(issue_keys=True, openai_api_key=UPSTREAM_KEY)
    data = make_export(tmp_path / "qa")
    result = evaluate_cli(proxy, tmp_path, data)
    # the refusals are not scored as wrong answers: the run stops and says what to set
    assert result.exit_code == 2, (result.output, result.exception)
    text = " ".join(result.output.split())
    assert "the proxy refused" in text and "401" in text and "OPENAI_API_KEY" in text
    assert "send the API key tuneloop issued" in text
    assert proxy.admin().eval_runs()[0]["status"] == "failed"
    missing = evaluate_cli(proxy, tmp_path, data, "--api-key-env", "ACME_EVAL_KEY")
    assert missing.exit_code == 2 and "ACME_EVAL_KEY is not set" in missing.output
