"""`tuneloop forget --user` reaches everything that holds the user's prompts: evaluation
reports (read through `GET /admin/evals/{id}`), export files (named; deleted with
`--purge-exports`), and the database file's free blocks (`tuneloop compact`, `forget
--compact`): the file's raw bytes are grepped for a unique marker before and after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import openai
import pytest
from click.testing import CliRunner

from exporter.evaluate import EvalOptions, evaluate
from storage.db import connect
from storage.migrations import migrate
from storage.sql_check import HIDDEN_TABLES
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, FakeUpstream, ProxyServer, both_stores
from tests.fakes.judge import FakeJudge
from tests.proc import ProxyProcess
from tests.test_export_cli import review_all, run_cli
from tuneloop.cli import main

pytestmark = both_stores

CANDIDATE = "ft:gpt-4o-mini-2024-07-18:acme::v1"
BASELINE = "gpt-4o-mini"


def ask(client: openai.OpenAI, user: str, text: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=BASELINE, messages=[{"role": "user", "content": text}],
        extra_headers={"x-tuneloop-user": user})
    return str(raw.headers["x-tuneloop-id"])


def ask_as(proxy: ProxyServer, user: str | bytes) -> str:
    """A chat request whose x-tuneloop-user carries the UTF-8 bytes of `user` (or `user`'s
    bytes as they are). The openai SDK cannot send a non-ASCII header value (it re-encodes
    every header as ASCII): raw httpx does, as curl and most libraries do."""
    raw = user.encode("utf-8") if isinstance(user, str) else user
    answered = proxy.http().post("/v1/chat/completions", headers={
        "x-tuneloop-user": raw, "authorization": f"Bearer {UPSTREAM_KEY}"},
        json={"model": BASELINE, "messages": [{"role": "user", "content": "hello"}]})
    assert answered.status_code == 200, answered.text
    return answered.headers["x-tuneloop-id"]


def mojibake(user: str) -> str:
    """How versions that read headers as latin-1 stored a UTF-8 id."""
    return user.encode("utf-8").decode("latin-1")


NON_ASCII_USERS = ("m\u00fcller", "m\u00fcller@b\u00fccher.de", "\u7528\u6237-7")


@pytest.mark.parametrize("redact", [[], ["email", "phone", "card"]], ids=["plain", "redacted"])
def test_a_non_ascii_user_is_stored_as_sent_and_forgotten(
        proxy_factory: Callable[..., ProxyServer], redact: list[str]) -> None:
    # with Postgres every replica must share the pseudonyms' key: it is a setting there
    proxy = proxy_factory(redact=redact, redaction_key="ab" * 32)
    ids = {user: ask_as(proxy, user) for user in NON_ASCII_USERS}
    # rows an older version logged: the id stored as its UTF-8 bytes read as latin-1 (sending
    # those characters' UTF-8 bytes stores exactly that, and its pseudonym, today)
    legacy = {user: ask_as(proxy, mojibake(user)) for user in NON_ASCII_USERS[:2]}
    # Python's http.client (requests, urllib) and Node send a str header value as latin-1
    latin1 = {user: ask_as(proxy, user.encode("latin-1")) for user in NON_ASCII_USERS[:2]}
    kept = ask_as(proxy, "m\u00fcller-2")
    ascii_kept = proxy.openai().chat.completions.with_raw_response.create(
        model=BASELINE, messages=[{"role": "user", "content": "hello"}],
        extra_headers={"x-tuneloop-user": "mueller"}).headers["x-tuneloop-id"]
    stored = {user: proxy.row(interaction)["user_id"] for user, interaction in ids.items()}
    assert stored["m\u00fcller"] == "m\u00fcller"
    assert proxy.row(latin1["m\u00fcller"])["user_id"] == "m\u00fcller"
    assert stored["\u7528\u6237-7"] == "\u7528\u6237-7"
    email = "m\u00fcller@b\u00fccher.de"
    if redact:
        assert stored[email].startswith("[ID:")
        assert proxy.row(latin1[email])["user_id"] == stored[email]
        assert proxy.row(legacy[email])["user_id"].startswith("[ID:")
    else:
        assert stored[email] == proxy.row(latin1[email])["user_id"] == email
    admin = proxy.admin()
    for user in NON_ASCII_USERS:
        gone = 1 + (user in legacy) + (user in latin1)
        assert admin.forget(user)["deleted"]["interactions"] == gone, user
    assert sorted(proxy.sql("SELECT id FROM interactions")) == sorted([[kept], [ascii_kept]])


def test_forget_reaches_evaluation_reports_and_names_or_purges_exports(
        proxy: ProxyServer, tmp_path: Path) -> None:
    client = proxy.openai()
    ids = {user: [ask(client, user, f"{user} question {n}: where is my parcel?")
                  for n in range(8)] for user in ("uma", "vic", "wes")}
    for interaction_ids in ids.values():
        for interaction_id in interaction_ids:
            proxy.row(interaction_id)
    review_all(proxy, [i for batch in ids.values() for i in batch])
    out = tmp_path / "exports" / "parcels-v1"
    made = run_cli(proxy, tmp_path, "export", "--name", "parcels", "--format", "chat",
                   "--validation", "0.5", "--out", str(out), "--seed", "1")
    assert made.exit_code == 0, made.output
    validation = (out / "validation.jsonl").read_text()
    assert "uma question" in validation and "wes question" in validation  # precondition

    dataset_id = proxy.sql("SELECT id FROM datasets WHERE name = 'parcels'")[0][0]
    proxy.admin().record_job({"id": "ftjob-parcels", "provider": "openai", "method": "supervised",
                              "base_model": "gpt-4o-mini-2024-07-18", "status": "running",
                              "dataset_id": dataset_id})
    proxy.upstream.state.model_replies[BASELINE] = "I don't know."  # every example differs
    report = evaluate(proxy.admin(), out, EvalOptions(CANDIDATE, BASELINE, max_differences=100),
                      api_key=UPSTREAM_KEY)
    stored = str(proxy.admin().eval_run(report.run_id)["report"])
    assert "uma question" in stored  # the report quotes the user's prompts
    proxy.upstream.state.judges["judge-model"] = FakeJudge(prefer="echo:")
    judged = evaluate(proxy.admin(), out, EvalOptions(CANDIDATE, BASELINE, scorer="judge",
                                                      judge_model="judge-model",
                                                      max_differences=0), api_key=UPSTREAM_KEY)
    assert judged.judgements is not None and not judged.differences
    assert "uma question" in str(proxy.admin().eval_run(judged.run_id)["report"]["judgements"])

    forgot = run_cli(proxy, tmp_path, "forget", "--user", "uma")
    assert forgot.exit_code == 0, forgot.output
    text = " ".join(forgot.output.split())
    assert f"export parcels v1 at {out}" in text and "--purge-exports deletes it" in text
    assert "fine-tuning job ftjob-parcels (openai" in text  # the provider holds a copy
    after = proxy.admin().eval_run(report.run_id)["report"]
    assert "uma question" not in str(after)
    assert after["forgotten"] >= 1 and "vic question" in str(after)  # the rest is kept
    after_judged = proxy.admin().eval_run(judged.run_id)["report"]
    assert "uma question" not in str(after_judged) and after_judged["forgotten"] >= 1
    assert "vic question" in str(after_judged["judgements"])
    assert out.is_dir()  # named, not deleted

    purged = run_cli(proxy, tmp_path, "forget", "--user", "wes", "--purge-exports")
    assert purged.exit_code == 0, purged.output
    assert f"export parcels v1 at {out}: removed" in " ".join(purged.output.split())
    assert not out.exists()


def test_purge_keeps_a_directory_whose_lineage_does_not_name_the_user(tmp_path: Path) -> None:
    from tuneloop.commands.governance import purge_export

    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text("{}")
    (other / "lineage.jsonl").write_text('{"interaction_id":"x","split":"train"}\n')
    assert "kept" in purge_export({"path": str(other), "interaction_ids": ["y"]})
    assert other.is_dir()


def test_forget_then_compact_in_one_command(proxy: ProxyServer, tmp_path: Path) -> None:
    """`forget --compact` against a server in this very process (the file is open here)."""
    marker = f"QUINMARKER-{uuid.uuid4().hex}"
    interaction = ask(proxy.openai(), "quin", f"{marker} private")
    proxy.row(interaction)
    db = proxy.settings.db
    if isinstance(db, str):  # Postgres: the forget is done, compaction is the database's own
        result = run_cli(proxy, tmp_path, "--db", db, "forget", "--user", "quin", "--compact")
        assert result.exit_code != 0
        text = " ".join(result.output.split())
        assert "deleted" in text and "autovacuum" in text and "VACUUM" in text, text
        assert "Traceback" not in result.output
        assert proxy.sql("SELECT count(*) FROM interactions") == [[0]]
        answer = proxy.http().post("/admin/compact",
                                   headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_supported"
        return
    assert marker.encode() in raw_bytes(db)
    result = run_cli(proxy, tmp_path, "--db", str(db), "forget", "--user", "quin", "--compact")
    assert result.exit_code == 0, result.output
    assert "deleted" in result.output and f"the server at {proxy.url}" in result.output
    assert marker.encode() not in raw_bytes(db)
    assert proxy.sql("SELECT count(*) FROM interactions") == [[0]]
    later = ask(proxy.openai(), "amy", "after")
    assert proxy.row(later)["id"] == later


def raw_bytes(db: Path) -> bytes:
    wal = db.with_name(db.name + ".wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_type = 'BASE TABLE'").fetchall()]
    return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}


def test_compact_on_a_running_server_leaves_no_trace_and_keeps_serving(
        tmp_path: Path, fake_openai: FakeUpstream) -> None:
    db = tmp_path / "live.duckdb"
    marker = f"ZEDMARKER-{uuid.uuid4().hex}"
    env = {"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "TUNELOOP_INGEST_INTERVAL_MS": "50"}
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with ProxyProcess(db, fake_openai.base_url, env) as proc:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="k", max_retries=0)
        for n in range(3):
            ask(client, "zed", f"{marker} private {n}")
            ask(client, "amy", f"amy question {n}")
        http = httpx.Client(base_url=proc.url, headers=auth, timeout=60)

        def sql(query: str) -> list[list[object]]:
            answer = http.post("/admin/sql", json={"sql": query})
            assert answer.status_code == 200, answer.text
            rows: list[list[object]] = answer.json()["rows"]
            return rows

        forgot = http.post("/admin/forget", json={"user": "zed"})
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["deleted"]["interactions"] == 3
        assert marker.encode() in raw_bytes(db), "the deleted bytes are still in the file"
        tables = [r[0] for r in sql("SELECT table_name FROM information_schema.tables WHERE "
                                    "table_schema = 'main' AND table_type = 'BASE TABLE'")
                  if r[0] not in HIDDEN_TABLES]
        before = {t: sql(f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}
        assert before["interactions"] == 3 and before["_migrations"] >= 17

        compacting = subprocess.Popen(
            [sys.executable, "-m", "tuneloop.cli", "--db", str(db), "compact", "--api", proc.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN})
        # traffic meanwhile is answered (it never waits on DuckDB) and logged afterwards
        meanwhile = [ask(client, "amy", f"amy during the compaction {n}") for n in range(10)]
        stdout, stderr = compacting.communicate(timeout=300)
        assert compacting.returncode == 0, stderr
        assert f"the server at {proc.url}" in stdout

        assert marker.encode() not in raw_bytes(db)
        after = {t: sql(f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}
        # rows logged during the compaction are the only difference
        assert {t: n for t, n in after.items() if not t.startswith("search_")} == {
            **{t: n for t, n in before.items() if not t.startswith("search_")},
            "interactions": after["interactions"]}
        # still serving, reading and ingesting
        later = ask(client, "amy", "amy after the compaction")
        wanted = [*meanwhile, later]
        logged: list[list[object]] = []
        for _ in range(200):
            logged = sql("SELECT count(*) FROM interactions WHERE id IN ("
                         + ", ".join(f"'{i}'" for i in wanted) + ")")
            if logged[0][0] == len(wanted):
                break
            time.sleep(0.05)
        assert logged == [[len(wanted)]]
        http.close()
    assert marker.encode() not in raw_bytes(db)
    assert db.stat().st_mode & 0o777 == 0o600
    con = connect(db)  # the table no query may read kept its row through the compaction
    assert con.execute("SELECT count(*) FROM forgotten_users").fetchall() == [(1,)]
    con.close()


def test_compact_directly_on_the_file_when_no_server_runs(tmp_path: Path) -> None:
    db = tmp_path / "idle.duckdb"
    marker = f"YOLMARKER-{uuid.uuid4().hex}"
    con = connect(db)
    migrate(con)
    for n in range(50):
        con.execute("INSERT INTO interactions (id, created_at, endpoint, traffic, request, "
                    "user_id) VALUES (?, now(), 'chat.completions', 'production', ?, ?)",
                    [f"i{n}", f'{{"p": "{marker if n % 2 else "keep"} {n}"}}',
                     "yol" if n % 2 else "amy"])
    con.execute("CHECKPOINT")
    con.execute("DELETE FROM interactions WHERE user_id = 'yol'")
    con.execute("CHECKPOINT")
    before = table_counts(con)
    con.close()
    assert marker.encode() in raw_bytes(db)

    result = CliRunner().invoke(main, ["--db", str(db), "compact"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"compacted {db}" in " ".join(result.output.split())
    assert marker.encode() not in raw_bytes(db)
    con = connect(db, read_only=True)
    try:
        assert table_counts(con) == before and before["interactions"] == 25
        assert con.execute("SELECT count(*) FROM _migrations").fetchall()[0][0] >= 17
    finally:
        con.close()
