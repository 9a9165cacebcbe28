"""CLI polish from the trial (issue 14): `promote --canary` on an alias without a route says how
to create it, `tuneloop sql` hints (no token, a locked file), the README's first snippet
starts the official SDK, `jobs list` cuts nothing, an upload error names its URL. Real proxy
on loopback, fake upstream, the CLI's main function (a subprocess where a second process must
hold the database file)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import openai
import pytest
from click.testing import CliRunner

from exporter.providers.base import TransientProviderError
from exporter.providers.openai_ft import OpenAIFineTuning
from tests.conftest import ADMIN_TOKEN, FakeUpstream, ProxyServer
from tests.fakes.server import free_port
from tests.test_export_cli import flat
from tests.test_promotion import reached, send
from tuneloop.cli import main
from tuneloop.errors import TuneloopError

ROOT = Path(__file__).resolve().parents[1]
FT = "ft:gpt-4o-mini-2024-07-18:acme::v1"


def test_canary_on_an_alias_without_a_route_says_how_to_create_it(proxy: ProxyServer,
                                                                  tmp_path: Path) -> None:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url}
    db = ["--db", str(tmp_path / "cli.duckdb")]
    runner = CliRunner()
    canary = ["promote", "--alias", "gpt-4o-mini", "--model", FT, "--canary", "50"]
    result = runner.invoke(main, [*db, *canary], env=env)
    assert result.exit_code != 0
    said = flat(result.output)
    assert "promote fully" not in said and "canary 100" not in said
    assert "`tuneloop promote --alias gpt-4o-mini --model gpt-4o-mini`" in said
    assert f"`tuneloop promote --alias gpt-4o-mini --model {FT} --canary 50`" in said
    assert proxy.admin().routes() == {}

    # the commands it names do what it says: the route first, then the canary beside it
    for command in re.findall(r"`tuneloop (promote [^`]*)`", said):
        result = runner.invoke(main, [*db, *command.split()], env=env)
        assert result.exit_code == 0, result.output
    mark = len(proxy.upstream.state.requests)
    send(proxy, 40, model="gpt-4o-mini")  # 40 sticky users at 50%: both seen
    assert set(reached(proxy, mark)) == {"gpt-4o-mini", FT}


def test_sql_without_a_token_says_where_the_token_file_is(proxy: ProxyServer,
                                                          tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.duckdb"
    result = CliRunner().invoke(main, ["--db", str(db), "sql", "SELECT 1"],
                                env={"TUNELOOP_API": proxy.url, "TUNELOOP_ADMIN_TOKEN": None,
                                     "TUNELOOP_REVIEWER_TOKEN": None})
    assert result.exit_code == 3
    said = flat(result.output)
    assert f"noadmin-tokenfileat{db}.admin-token" in "".join(said.split())  # rich wraps
    assert "--db" in said and "--api" in said


def test_sql_with_no_server_and_no_database_file_hints_api_and_db(tmp_path: Path) -> None:
    missing = tmp_path / "tuneloop.duckdb"
    result = CliRunner().invoke(main, ["--db", str(missing), "sql", "SELECT 1"],
                                env={"TUNELOOP_API": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 6
    said = flat(result.output)
    assert "no tuneloop server answers" in said and str(missing) in "".join(said.split())
    assert "--api" in said and "TUNELOOP_API" in said
    assert "--db" in said and "TUNELOOP_DB" in said
    assert not missing.exists()


def test_sql_on_a_held_file_points_to_the_api_not_to_itself(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    holder = duckdb.connect(str(db))  # this process holds the file, as a server would
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "TUNELOOP_API": f"http://127.0.0.1:{free_port()}"}
        env.pop("TUNELOOP_ADMIN_TOKEN", None)
        done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "--db", str(db), "sql",
                               "SELECT 1"], env=env, capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    finally:
        holder.close()
    assert done.returncode == 7, done.stderr
    said = flat(done.stderr)
    assert "--api http://HOST:PORT (or set TUNELOOP_API)" in said
    assert "tuneloop sql" not in said


def test_the_readme_first_snippet_starts_the_sdk_without_an_environment_key(
        proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    call = next(node for node in ast.walk(ast.parse(snippet.replace("[...]", "[]")))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "OpenAI")
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    assert kwargs["base_url"] == "http://localhost:4000/v1" and "api_key" in kwargs
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = openai.OpenAI(**{**kwargs, "base_url": f"{proxy.url}/v1"})
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content


def test_jobs_list_shows_whole_ids_and_model_names(proxy: ProxyServer, tmp_path: Path) -> None:
    job_id = "ftjob-" + "abcdef0123456789" * 2
    model = "ft:gpt-4o-mini-2024-07-18:acme-customer-support:support-bot-v7:AbCdEf12"
    admin = proxy.admin()
    admin.record_job({"id": job_id, "provider": "openai", "base_model":
                      "gpt-4o-mini-2024-07-18", "method": "supervised", "status": "running"})
    admin.update_job(job_id, status="succeeded", fine_tuned_model=model)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "jobs", "list"],
                                env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
                                     "TUNELOOP_API": proxy.url, "COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith(job_id))
    assert row.split()[:4] == [job_id, "succeeded", "gpt-4o-mini-2024-07-18", model]


def test_an_upload_error_names_the_url_it_tried(tmp_path: Path,
                                                fake_openai: FakeUpstream) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": []}\n')
    closed = f"http://127.0.0.1:{free_port()}/v1"
    provider = OpenAIFineTuning(api_key="sk-test", base_url=closed, max_retries=0)
    with pytest.raises(TransientProviderError) as unreachable:
        provider.upload(train, None)
    assert f"upload train.jsonl (POST {closed}/files)" in unreachable.value.message
    wrong = f"{fake_openai.url}/not-the-api/v1"
    provider = OpenAIFineTuning(api_key="sk-test", base_url=wrong, max_retries=0)
    with pytest.raises(TuneloopError) as refused:
        provider.upload(train, None)
    assert f"upload train.jsonl (POST {wrong}/files)" in refused.value.message
