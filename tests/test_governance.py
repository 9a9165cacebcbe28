"""Retention window and `tuneloop forget --user`: gone everywhere in storage, nothing else."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from storage.db import Connection
from storage.governance import apply_retention, dependent_tables, forget_user
from storage.records import insert_interactions, to_arrow
from storage.search_index import index_batch, index_edit
from storage.spool import Spool
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer, both_stores
from tests.store_support import connected, readable

pytestmark = both_stores


def ask(proxy: ProxyServer, user: str, text: str) -> str:
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
        extra_headers={"x-tuneloop-user": user})
    return str(raw.headers["x-tuneloop-id"])


def every_table_mentioning(proxy: ProxyServer, needle: str) -> list[str]:
    columns = readable(proxy.sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE "
        "table_schema IN ('main', 'public') AND (data_type LIKE 'VARCHAR%' OR data_type LIKE "
        "'%[]' OR data_type IN ('JSON', 'json', 'text', 'character varying', 'ARRAY'))"))
    if not columns:
        return []
    # one query for every column: a query per column took minutes on a loaded CI machine
    union = " UNION ALL ".join(
        f"SELECT '{table}.{column}' AS place, count(*) AS n FROM \"{table}\" "
        f"WHERE CAST(\"{column}\" AS VARCHAR) LIKE '%{needle}%'" for table, column in columns)
    found = [place for place, n in proxy.sql(f"SELECT place, n FROM ({union}) AS hits") if n]
    return found


def test_forget_user_deletes_everywhere_and_nothing_else(proxy: ProxyServer) -> None:
    doomed = [ask(proxy, "alice", f"alice secret {n}") for n in range(3)]
    kept = ask(proxy, "bob", "bob question")
    admin = proxy.admin()
    proxy.wait_logged(4)
    admin.request("POST", f"/admin/interactions/{doomed[0]}/review", json={
        "action": "edit", "reviewer": "rita", "expected_revision": 0,
        "messages": [{"role": "user", "content": "alice secret 0"},
                     {"role": "assistant", "content": "fixed alice answer"}]})
    admin.request("POST", f"/admin/interactions/{doomed[1]}/tags",
                  json={"add": ["alice-tag"], "reviewer": "rita"})
    admin.request("POST", f"/admin/interactions/{kept}/review", json={
        "action": "approve", "reviewer": "rita", "expected_revision": 0})
    with proxy.http() as http:
        assert http.post("/v1/feedback", json={"id": doomed[2], "score": -1,
                                                "comment": "alice was unhappy"}
                         ).status_code in (200, 201)
    assert every_table_mentioning(proxy, "alice")  # the search finds what is there

    # the reviewer token may not forget
    with proxy.http() as http:
        refused = http.post("/admin/forget", json={"user": "alice"},
                            headers={"authorization": f"Bearer {REVIEWER_TOKEN}"})
    assert refused.status_code == 403

    result = admin.forget("alice")
    assert result["deleted"]["interactions"] == 3
    assert result["deleted"]["review_revisions"] >= 1
    assert result["deleted"]["feedback"] == 1
    assert result["total"] == sum(result["deleted"].values())
    assert every_table_mentioning(proxy, "alice") == []
    assert proxy.sql("SELECT id FROM interactions") == [[kept]]
    assert admin.interaction(kept)["review"] == "approved"
    assert admin.forget("alice")["total"] == 0


def test_forget_finds_a_user_named_in_the_body_when_a_header_named_another(
        proxy: ProxyServer) -> None:
    """user_id is the x-tuneloop-user header when sent (else OpenAI's `user` body field):
    forgetting the body's user must find the request too."""
    both = proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hana's question"}],
        user="hana@example.com", extra_headers={"x-tuneloop-user": "session-7"}
    ).headers["x-tuneloop-id"]
    kept = ask(proxy, "ivan", "ivan's question")
    proxy.wait_logged(2)
    assert proxy.row(both)["user_id"] == "session-7"
    assert proxy.admin().forget("hana@example.com")["deleted"]["interactions"] == 1
    assert [r[0] for r in proxy.sql("SELECT id FROM interactions")] == [kept]


def test_forget_reaches_evaluation_copies_of_the_users_prompts(proxy: ProxyServer) -> None:
    """Evaluation replays a logged prompt without its user; it names the source instead."""
    source = ask(proxy, "gina", "gina's private question")
    other = ask(proxy, "hal", "hal's question")
    copies = []
    for _ in range(2):
        raw = proxy.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "gina's private question"}],
            extra_headers={"x-tuneloop-traffic": "evaluation", "x-tuneloop-source": source})
        copies.append(raw.headers["x-tuneloop-id"])
    proxy.wait_logged(4)
    assert proxy.sql(f"SELECT source_id, user_id FROM interactions WHERE id = '{copies[0]}'"
                     ) == [[source, None]]
    assert proxy.admin().forget("gina")["deleted"]["interactions"] == 3
    assert proxy.sql("SELECT id FROM interactions") == [[other]]


def test_forget_reaches_interactions_still_in_the_spool(proxy_factory: Any) -> None:
    proxy = proxy_factory(ingest_interval_ms=60_000, ingest_batch_rows=100_000)
    ask(proxy, "carol", "carol in the spool")
    assert proxy.admin().forget("carol")["deleted"]["interactions"] == 1


def test_retention_deletes_old_interactions_with_their_revisions(store: str) -> None:
    with connected(store) as con:
        retention_deletes_old_interactions(con)


def retention_deletes_old_interactions(con: Connection) -> None:
    now = datetime.now(UTC)
    for n, age_days in enumerate((100, 40, 1)):
        created = now - timedelta(days=age_days)
        con.execute("INSERT INTO interactions (id, created_at, endpoint, traffic) VALUES "
                    "(?, ?, 'chat.completions', 'production')", [f"i{n}", created])
        con.execute("INSERT INTO review_revisions (interaction_id, revision, action, state, "
                    "reviewer, created_at) VALUES (?, 1, 'approve', 'approved', 'r', ?)",
                    [f"i{n}", now])
        con.execute("INSERT INTO dataset_items (dataset_id, interaction_id, revision_id, "
                    "revision, split, line) VALUES ('d1', ?, NULL, 1, 'train', ?)", [f"i{n}", n])
    deleted = apply_retention(con, 30, now=now)
    assert deleted["interactions"] == 2 and deleted["review_revisions"] == 2
    assert [r[0] for r in con.execute("SELECT id FROM interactions").fetchall()] == ["i2"]
    # exported datasets stay traceable: lineage pointers are kept by retention
    assert con.execute("SELECT count(*) FROM dataset_items").fetchall()[0][0] == 3
    assert {"reviews", "review_revisions", "feedback", "interaction_tags", "search_docs",
            "search_terms", "dataset_items"} <= set(dependent_tables(con))


def test_forget_and_retention_reach_the_quarantine(proxy: ProxyServer, tmp_path: Path) -> None:
    """Records the database refused wait in the spool's quarantine file for a human; they are
    one user's data too, and they age like the rest."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    spool = Spool(tmp_path / "elsewhere", max_bytes=1_000_000)  # written as ingest writes it
    for user, age_days in (("erin", 0), ("erin", 0), ("frank", 0), ("frank", 90)):
        spool.quarantine({"id": f"{user}-{age_days}", "user_id": user,
                          "created_at": now_us - age_days * 86_400_000_000,
                          "request": f"{user} said something"}, "refused")
    quarantine = proxy.settings.spool_path / "quarantine.jsonl"
    quarantine.write_bytes((tmp_path / "elsewhere" / "quarantine.jsonl").read_bytes()
                           + b"{torn line\n")  # unreadable: kept, it can't be told whose it is

    result = proxy.admin().forget("erin")
    assert result["deleted"]["quarantine"] == 2
    assert "erin" not in quarantine.read_text() and "frank-0" in quarantine.read_text()
    with proxy.http() as http:
        response = http.post("/admin/retention", json={"days": 30},
                             headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.json()["deleted"]["quarantine"] == 1
    lines = quarantine.read_text().splitlines()
    assert len(lines) == 2 and "frank-0" in lines[0] and lines[1] == "{torn line"
    assert quarantine.stat().st_mode & 0o777 == 0o600


def test_forget_command_line(proxy: ProxyServer) -> None:
    ask(proxy, "dave", "dave asks")
    proxy.wait_logged(1)
    out = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli", "forget", "--user", "dave", "--api", proxy.url],
        capture_output=True, text=True, env={"TUNELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
                                             "PATH": "/usr/bin:/bin"}, check=True)
    assert "deleted" in out.stdout and "dave" in out.stdout
    assert proxy.sql("SELECT count(*) FROM interactions") == [[0]]


@pytest.mark.parametrize("body", [{}, {"user": ""}, {"user": 5}, {"user": "x" * 300}])
def test_forget_refuses_bad_bodies(proxy: ProxyServer, body: dict[str, Any]) -> None:
    with proxy.http() as http:
        response = http.post("/admin/forget", json=body,
                             headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400


def test_forget_deletes_the_users_postings_edits_included(store: str) -> None:
    """search_terms has no index by interaction on Postgres (migration 48): a forgotten
    interaction's postings are found by its keys in search_docs, an edit's added ones too;
    the other users' postings stay."""
    now = datetime.now(UTC)

    def row(n: int, user: str, text: str) -> dict[str, Any]:
        return {"id": f"i{n}", "created_at": now, "endpoint": "chat.completions",
                "traffic": "production", "user_id": user,
                "request": orjson.dumps({"messages": [{"role": "user", "content": text}]}
                                        ).decode()}

    with connected(store) as con:
        batch = to_arrow([row(0, "alice", "refund my order"), row(1, "alice", "cancel plan"),
                          row(2, "bob", "refund my order please")])
        insert_interactions(con, batch)
        index_batch(con, batch)
        index_edit(con, "i0", [{"role": "user", "content": "refund my order"},
                               {"role": "assistant", "content": "zebra unicorn answer"}])

        def postings() -> dict[str, int]:
            return dict(con.execute("SELECT interaction_id, count(*) FROM search_terms "
                                    "GROUP BY 1").fetchall())

        before = postings()
        assert before["i0"] > before["i1"] > 0 and before["i2"] > 0
        deleted = forget_user(con, "alice").deleted
        assert deleted["search_terms"] == before["i0"] + before["i1"]
        assert postings() == {"i2": before["i2"]}
