"""The read-only SQL endpoint (`POST /admin/sql`, `tuneloop sql`) against a hostile reviewer.

Each attack runs against a real proxy's admin API: answers too big to build, long queries that
hold threads, functions with side effects (`nextval`, `checkpoint`) or that reveal the server
(`duckdb_settings()` and friends show file paths), and stored text that a terminal printer
would read as markup. DuckDB stores only: the attacks and the allowlist are DuckDB's; Postgres
has its own in test_sql_postgres.py.
"""

from __future__ import annotations

import json
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
    answer = post_sql(proxy, "SELECT lpad('x', 100000, 'y') FROM range(1000)")
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


@pytest.mark.parametrize("sql", [
    "SELECT name, setting FROM pg_settings, (WITH pg_settings AS (SELECT 1) SELECT 1) t",
    "SELECT path FROM duckdb_databases, (WITH duckdb_databases AS (SELECT 1) SELECT 1) t",
    "SUMMARIZE SELECT path FROM duckdb_databases, "
    "(WITH duckdb_databases AS (SELECT 1) SELECT 1) t",
    "SELECT * FROM pragma_database_list, (WITH pragma_database_list AS (SELECT 1) SELECT 1) t",
    "SELECT * FROM pg_prepared_statements, "
    "(WITH pg_prepared_statements AS (SELECT 1) SELECT 1) t",
    "SELECT * FROM duckdb_logs, (WITH duckdb_logs AS (SELECT 1) SELECT 1) t",
    "SELECT sql FROM sqlite_master, (WITH sqlite_master AS (SELECT 1) SELECT 1) t",
    "SELECT * FROM interactions, (WITH RECURSIVE pg_settings AS (SELECT 1) SELECT 1) t, "
    "pg_settings",
    "FROM pg_settings SELECT name, setting UNION ALL (WITH pg_settings AS (SELECT 1, 2) "
    "SELECT 'a', 'b')",
    'SELECT * FROM "PG_Settings", (WITH "pg_SETTINGS" AS (SELECT 1) SELECT 1) t',
    "WITH duckdb_databases AS (SELECT 1) SELECT * FROM main.duckdb_databases",
    "WITH x AS (SELECT 1) SELECT * FROM main.duckdb_settings",
    "SELECT * FROM system.main.duckdb_settings",
    "SELECT * FROM memory.main.interactions",
    "SELECT * FROM temp.main.interactions",
    "WITH b AS (SELECT * FROM duckdb_settings), duckdb_settings AS (SELECT 1) SELECT * FROM b",
])
def test_a_cte_name_does_not_open_duckdb_catalog_objects(
    proxy: ProxyServer, tmp_path: Path, sql: str,
) -> None:
    """A CTE is visible in its own WITH only: naming one like a DuckDB view must not let the
    same name, used outside that WITH, read the view (settings, the database's path)."""
    answer = post_sql(proxy, sql, REVIEWER_TOKEN)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "read_only"
    assert str(tmp_path) not in answer.text


def test_ctes_in_scope_still_work(proxy: ProxyServer) -> None:
    assert proxy.sql("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r "
                     "WHERE n < 3) SELECT sum(n) FROM r") == [[6]]
    assert proxy.sql("WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) "
                     "SELECT y FROM b, (SELECT * FROM a) z") == [[2]]
    assert proxy.sql("SELECT count(*) FROM main.interactions") == [[0]]


@pytest.mark.parametrize("sql", [
    "SELECT length(repeat('xxxxxxxx', 20000000))",
    "SELECT length(repeat(model, 1000000)) FROM interactions",
    "SELECT length(lpad('7', 100000000, '0'))",
    "SELECT length(rpad('7', 100000000, ' '))",
    "SELECT length(printf('%100000000d', 1))",
    "SELECT length(format('{:>100000000}', 1))",
])
def test_functions_that_build_huge_values_are_bounded(proxy: ProxyServer, sql: str) -> None:
    """One call that builds a huge string is a single vector operation: the time limit cannot
    interrupt it and DuckDB's memory limit does not count it, so its size is bounded first."""
    answer = post_sql(proxy, sql, REVIEWER_TOKEN)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "read_only"
    assert proxy.sql("SELECT repeat('-', 4), lpad('7', 3, '0'), rpad('a', 2, '.')") == [
        ["----", "007", "a."]]


@pytest.mark.parametrize("sql", [
    "SELECT " + "+".join(["1"] * 400),
    "SELECT " + "CASE WHEN true THEN " * 400 + "1" + " END" * 400,
    "SELECT " + "[" * 400 + "1" + "]" * 400,
    "SELECT " + "(SELECT " * 400 + "1" + ")" * 400,
    "SELECT " + "(" * 3000 + "1" + ")" * 3000,
    "SELECT " + "||".join(["'a'"] * 3000),
    "SELECT '" + "x" * 200_000 + "'",
])
def test_deeply_nested_sql_is_refused_as_too_complex(proxy: ProxyServer, sql: str) -> None:
    answer = post_sql(proxy, sql, REVIEWER_TOKEN)
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "sql_too_complex"
    assert post_sql(proxy, "SELECT 1").status_code == 200


HOSTILE = ("a" + "\x1b]0;owned\x07" + "\x1b[2J" + "\x9b31m" + "\u202egnp.exe" + "\u2028"
           + "\u2066\u200f\x85 z")


@pytest.mark.parametrize("output", ["table", "vertical", "json", "csv"])
def test_cli_prints_no_terminal_controls_in_any_format(
    proxy: ProxyServer, tmp_path: Path, output: str,
) -> None:
    """ESC, BEL (an OSC title), C1 (U+009B is a CSI by itself), bidi overrides and U+2028 are
    printed as visible escapes in every format; json stays exact for a JSON reader."""
    result = cli(proxy, tmp_path, f"SELECT {' || '.join(_sql_chars(HOSTILE))} AS v",
                 "--format", output)
    assert result.exit_code == 0, (result.output, result.exception)
    controls = [c for c in result.stdout
                if (ord(c) < 0x20 and c not in "\r\n") or 0x7F <= ord(c) < 0xA0
                or c in "\u202e\u2066\u200f\u2028\u2029"]
    assert not controls, f"{output}: {controls!r} reached the terminal"
    if output == "json":
        assert json.loads(result.stdout) == [{"v": HOSTILE}]
    else:
        assert "\\x1b]0;owned\\x07" in result.stdout
        assert "\\x9b31m" in result.stdout
        assert "\\u202egnp.exe" in result.stdout


def _sql_chars(text: str) -> list[str]:
    return [f"'{c}'" if c.isascii() and c.isalnum() else f"chr({ord(c)})" for c in text]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM forgotten_users",
    "SELECT * FROM main.forgotten_users",
    'SELECT user_sha256 FROM "Forgotten_Users"',
    "SUMMARIZE forgotten_users",
    "SUMMARIZE SELECT * FROM forgotten_users",
    "WITH f AS (SELECT * FROM forgotten_users) SELECT * FROM f",
])
def test_forgotten_users_hashes_are_not_readable(proxy: ProxyServer, sql: str) -> None:
    """The table keeps a hash of each forgotten user's name: hashing a guess would confirm
    that "alice@example.com" was forgotten, so no query reads it."""
    proxy.admin().forget("alice@example.com")
    answer = post_sql(proxy, sql)
    assert answer.status_code == 403, (answer.status_code, answer.text[:300])
    assert answer.json()["error"]["code"] == "read_only"
    assert "forgotten_users" in post_sql(proxy, "SHOW TABLES").text  # its name is no secret
