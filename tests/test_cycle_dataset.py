"""A cycle whose data breaks a format rule (issue 14, review r14 #8): the run ends
`dataset_rejected`, `tuneloop cycle` exits non-zero (cron notices) and prints the offending
examples with how to fix them; `[dataset] skip_invalid = true` leaves them out as `export
--skip-invalid` does. Real proxy, the CLI as cron runs it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, ProxyServer
from tests.test_export_cli import SEPARATOR, completions, flat, review_all
from tuneloop.cli import main


def cycle_toml(tmp_path: Path, extra: str = "") -> Path:
    toml = tmp_path / "cycle.toml"
    toml.write_text(f"""name = "legacy"
alias = "bot"
[dataset]
name = "legacyds"
format = "legacy"
out_dir = "{tmp_path / 'exports'}"
{extra}
[finetune]
base_model = "davinci-002"
max_cost_usd = 0.000001
""")
    return toml


def test_a_rejected_dataset_fails_the_cycle_and_says_how_to_fix_it(
        proxy: ProxyServer, tmp_path: Path) -> None:
    [bad] = completions(proxy, f"a{SEPARATOR}b")  # the separator inside the prompt
    good = completions(proxy, *[f"plain question {i}" for i in range(14)])
    review_all(proxy, [bad, *good])
    proxy.admin().put_routes({"bot": {"targets": [{"model": "davinci-002"}]}})
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    args = ["--db", str(tmp_path / "cli.duckdb"), "cycle", "--config"]

    rejected = CliRunner().invoke(main, [*args, str(cycle_toml(tmp_path))], env=env)
    assert rejected.exit_code == 2, rejected.output
    text = flat(rejected.output)
    assert "ended: dataset_rejected" in text and bad in text
    assert f"separator_in_prompt ({bad}): the prompt contains the separator" in text
    assert "set `skip_invalid = true` under [dataset]" in text
    # the progress hint on stderr (rich) keeps `[dataset]` too: it was read as a style tag
    assert "under in the cycle's config" not in text
    assert text.count("under [dataset] in the cycle's config") == text.count(
        "in the cycle's config"), text
    [run] = proxy.admin().cycle_runs("legacy")
    last = proxy.admin().cycle_run(run["id"])["steps"][-1]
    assert last["detail"]["problems"] == {"separator_in_prompt": [bad]}

    skipping = CliRunner().invoke(
        main, [*args, str(cycle_toml(tmp_path, "skip_invalid = true"))], env=env)
    assert skipping.exit_code == 0, skipping.output
    newest = proxy.admin().cycle_runs("legacy")[0]
    assert newest["outcome"] == "over_budget"  # past the export and the validation
    [version] = proxy.admin().dataset_versions("legacyds")["versions"]
    assert version["manifest"]["counts"]["train"] + version["manifest"]["counts"][
        "validation"] == len(good)
    assert proxy.upstream.state.jobs == {}
