"""The read-only SQL endpoint (`POST /admin/sql`, `tuneloop sql`) against a hostile reviewer.

Each attack runs against a real proxy's admin API: answers too big to build, long queries that
hold threads, functions with side effects (`nextval`, `checkpoint`) or that reveal the server
(`duckdb_settings()` and friends show file paths), and stored text that a terminal printer
would read as markup.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer
from tuneloop.cli import main

LONG = "SELECT count(*) FROM range(1000000000000) a"


def post_sql(proxy: ProxyServer, sql: str, token: str = ADMIN_TOKEN,
             **extra: Any) -> httpx.Response:
    return httpx.post(f"{proxy.url}/admin/sql", json={"sql": sql, **extra},
                      headers={"authorization": f"Bearer {token}"}, timeout=120)


def test_a_huge_answer_is_refused_not_built(proxy: ProxyServer) -> None:
    answer = post_sql(proxy, "SELECT repeat('x', 10000000) FROM range(30)")
    assert answer.status_code == 413, answer.status_code
    error = answer.json()["error"]
    assert error["code"] == "answer_too_large"
    assert "sql_max_bytes" in error["message"]
    assert len(answer.content) < 1000


def test_the_size_cap_is_a_setting(proxy_factory: Any) -> None:
    proxy = proxy_factory(sql_max_bytes=64 * 1024)
    assert post_sql(proxy, "SELECT range FROM range(1000)").status_code == 200
    too_big = post_sql(proxy, "SELECT range, 'some text to fill the row' FROM range(10000)")
    assert too_big.status_code == 413
    assert "65536" in too_big.json()["error"]["message"]


def test_a_second_query_of_the_same_token_waits_its_turn(proxy: ProxyServer) -> None:
    """Two long queries of the admin token and one of the reviewer's: one of the admin's gets
    429 at once, and the admin API's readers stay free for everyone else meanwhile."""
    answers: dict[str, httpx.Response] = {}

    def run(name: str, token: str) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: answers.__setitem__(name, post_sql(proxy, LONG, token)))
        thread.start()
        return thread

    threads = {name: run(name, token) for name, token in
               [("admin-1", ADMIN_TOKEN), ("admin-2", ADMIN_TOKEN), ("reviewer", REVIEWER_TOKEN)]}
    while not any(answers.get(n) is not None and answers[n].status_code == 429
                  for n in ("admin-1", "admin-2")):
        assert any(threads[n].is_alive() for n in ("admin-1", "admin-2")), (
            "both queries of one token ran: "
            + ", ".join(f"{n}: {a.status_code}" for n, a in answers.items()))
        threads["admin-1"].join(0.05)
    refused = next(a for n, a in answers.items() if n != "reviewer" and a.status_code == 429)
    assert refused.json()["error"]["code"] == "query_running"
    running = [t for n, t in threads.items() if n not in answers]
    assert len(running) == 2
    # the long queries hold no reader thread: the UI's reads still answer while they run
    listed = proxy.http().get("/admin/interactions",
                              headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert listed.status_code == 200
    assert all(t.is_alive() for t in running), "the reads waited for the long queries"
    for thread in running:
        thread.join()
    for answer in answers.values():
        if answer is not refused:
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "query_timeout"
    assert post_sql(proxy, "SELECT 1").status_code == 200, "the token is free again"


@pytest.mark.parametrize("sql", [
    "SELECT nextval('route_history_seq')",
    "SELECT currval('route_history_seq')",
    "SELECT setval('route_history_seq', 100)",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM force_checkpoint()",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM duckdb_temporary_files()",
    "SELECT * FROM pragma_database_list",
    "SELECT * FROM pragma_database_list()",
    "SELECT current_setting('temp_directory')",
    "SELECT getenv('HOME')",
    "SELECT * FROM query('SELECT * FROM duckdb_settings()')",
    "SELECT * FROM information_schema.schemata",
    "SELECT * FROM sqlite_master",
    "SELECT * FROM pg_catalog.pg_settings",
    "SELECT json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "SELECT (SELECT nextval('route_history_seq')) FROM range(1)",
    "WITH s AS (SELECT * FROM duckdb_settings()) SELECT count(*) FROM s",
    "DESCRIBE SELECT * FROM duckdb_settings()",
    "SELECT list_transform([1], lambda x: nextval('route_history_seq'))",
    "SHOW ALL TABLES",
])
def test_side_effects_and_server_details_are_refused(
    proxy: ProxyServer, tmp_path: Path, sql: str,
) -> None:
    answer = post_sql(proxy, sql)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "read_only"
    assert str(tmp_path) not in answer.text


def test_reads_work_and_a_refused_nextval_leaves_the_sequence_alone(
    proxy: ProxyServer,
) -> None:
    for _ in range(3):
        post_sql(proxy, "SELECT nextval('route_history_seq')")
    proxy.admin().put_routes({"alias": {"targets": [{"model": "gpt-4o-mini"}]}})
    assert proxy.sql("SELECT min(seq) FROM route_history") == [[1]]
    # what a reviewer does stays allowed
    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    proxy.wait_logged(1)
    assert proxy.sql(
        "WITH m AS (SELECT model, request->>'$.messages[0].content' AS text FROM interactions) "
        "SELECT model, upper(text), count(*) OVER () FROM m") == [["gpt-4o-mini", "HELLO", 1]]
    assert proxy.sql("SELECT count(*) FROM range(5), unnest([1, 2])") == [[10]]
    assert proxy.sql("SELECT list_transform([1, 2], lambda x: x * 2)") == [[[2, 4]]]
    tables = proxy.sql("SELECT table_name FROM information_schema.tables "
                       "WHERE table_name = 'interactions'")
    assert tables == [["interactions"]]


def cli(proxy: ProxyServer, tmp_path: Path, *args: str) -> Any:
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_API": proxy.url, "COLUMNS": "80"}
    return CliRunner().invoke(main, ["--db", str(tmp_path / "cli.duckdb"), "sql", *args],
                              env=env)


def test_cli_prints_stored_markup_as_plain_text(proxy: ProxyServer, tmp_path: Path) -> None:
    prompt = "[/bold] close what was never opened [red]and colour[/red] \x1b[31mescape"
    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    proxy.wait_logged(1)
    result = cli(proxy, tmp_path, "SELECT request->>'$.messages[0].content' AS prompt "
                 "FROM interactions")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "[/bold] close what was never opened [red]and colour[/red]" in result.stdout
    assert "\x1b" not in result.stdout, "a terminal escape from stored text reached the terminal"
    assert "\\x1b[31mescape" in result.stdout


def test_cli_error_with_markup_is_printed(proxy: ProxyServer, tmp_path: Path) -> None:
    result = cli(proxy, tmp_path, "SELECT [/bold] FROM")
    assert result.exit_code == 2, (result.output, result.exception)
    assert "[/bold]" in result.stderr


def test_cli_prints_wide_rows_whole(proxy: ProxyServer, tmp_path: Path) -> None:
    wide = "word " * 60
    result = cli(proxy, tmp_path, f"SELECT 1 AS id, '{wide}' AS text, 'more' AS other")
    assert result.exit_code == 0, (result.output, result.exception)
    assert wide.strip() in result.stdout
    assert "…" not in result.stdout
    assert "-[ record 1 ]" in result.stdout
