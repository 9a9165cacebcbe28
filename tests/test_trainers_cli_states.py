"""The trainers through the CLI at the edges of a job's life, against the fake Together API:
an option the provider does not take is a usage mistake (exit 2, as `--method dpo` on a chat
export), refused before anything is uploaded; `jobs serve` on a failed or cancelled job says
it failed / was cancelled (no "yet"); cancelling a job the record already has cancelled says
so and exits 0, with no provider call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import Result

from tests.conftest import ProxyServer
from tests.test_export_cli import flat, run_cli
from tests.test_trainers import TOGETHER_MODEL, export_dir, together

__all__ = ["export_dir", "together"]  # fixtures


def make_cli(proxy: ProxyServer, tmp_path: Path, together: tuple[str, Any]) -> Any:
    url, state = together

    def cli(*args: str) -> Result:
        return run_cli(proxy, tmp_path, *args, COLUMNS="200", TUNELOOP_TOGETHER_BASE_URL=url,
                       TOGETHER_API_KEY=state.api_key)

    return cli


def test_options_together_does_not_take_are_usage_mistakes(
        proxy: ProxyServer, export_dir: Path, tmp_path: Path,
        together: tuple[str, Any]) -> None:
    cli = make_cli(proxy, tmp_path, together)
    state = together[1]
    mark = len(state.requests)
    base = ("finetune", "--provider", "together", "--dataset", str(export_dir), "--base-model",
            TOGETHER_MODEL)
    for extra, said in ((["--seed", "3"], "Together's fine-tuning API takes no seed"),
                        (["--lr-multiplier", "2"], "not learning_rate_multiplier"),
                        (["--method", "dpo"], "it trains with method 'supervised', not 'dpo'")):
        refused = cli(*base, *extra)
        assert refused.exit_code == 2, refused.output
        assert said in flat(refused.output)
    assert len(state.requests) == mark  # nothing uploaded


def test_serve_and_cancel_say_what_became_of_the_job(
        proxy: ProxyServer, export_dir: Path, tmp_path: Path,
        together: tuple[str, Any]) -> None:
    cli = make_cli(proxy, tmp_path, together)
    state = together[1]
    base = ("finetune", "--provider", "together", "--dataset", str(export_dir), "--base-model",
            TOGETHER_MODEL)
    failed = cli(*base, "--suffix", "fail", "--wait", "--poll", "0.001")  # fails in training
    assert failed.exit_code == 8, failed.output
    job = failed.output.split()[0]
    served = cli("jobs", "serve", job, "--promote", "x-bot")
    assert served.exit_code == 2
    assert f"job {job} failed: it has no model to serve (`tuneloop jobs show {job}` has its " \
        "error; start a new job)" in flat(served.output)

    started = cli(*base, "--suffix", "c")
    job = started.output.split()[0]
    assert cli("jobs", "cancel", job).exit_code == 0
    assert cli("jobs", "follow", job, "--poll", "0.001").exit_code == 8  # now cancelled
    assert proxy.admin().job(job)["status"] == "cancelled"
    mark = len(state.requests)
    again = cli("jobs", "cancel", job)
    assert again.exit_code == 0, again.output
    assert f"{job} was already cancelled: nothing to do" in flat(again.output)
    assert len(state.requests) == mark  # Together was not asked (it would refuse: 400)
    served = cli("jobs", "serve", job)
    assert served.exit_code == 2
    assert f"job {job} was cancelled: it has no model to serve (start a new job)" \
        in flat(served.output)
    assert "yet" not in flat(served.output)
