"""Only items with a final answer are approvable, against a real proxy and DuckDB file: upstream
errors and cut streams stay out of the default queue, approving them is a clear 422 until an
edit supplies the answer, bulk approve skips and counts them, progress counts are exact, an
export skips an approved untrainable item with a warning, and a snapshot names its reviewer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from exporter.datasets import build_dataset
from exporter.pipeline import ExportOptions
from storage.records import insert_interactions, to_arrow
from storage.store import migrate_store, open_store
from tests.conftest import REVIEWER_TOKEN, ProxyServer, both_stores
from tests.test_export_cli import run_cli
from tests.test_review_api import logged
from tuneloop.errors import NotTrainable

pytestmark = both_stores
T = TypeVar("T")


def failed(proxy: ProxyServer, text: str) -> str:
    """An upstream error (502) through the proxy; its interaction id."""
    with pytest.raises(openai.APIStatusError) as error:
        proxy.openai().chat.completions.create(
            model="fail-502", messages=[{"role": "user", "content": text}])
    interaction_id = str(error.value.response.headers["x-tuneloop-id"])
    proxy.row(interaction_id)
    return interaction_id


def cut(proxy: ProxyServer, text: str) -> str:
    """A stream the upstream cuts after two events; its interaction id."""
    with proxy.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": text}],
        extra_headers={"x-fake-cut-after": "2"},
    ) as raw:
        interaction_id = str(raw.headers["x-tuneloop-id"])
        with pytest.raises(openai.APIError):
            for _ in raw.parse():
                pass
    proxy.row(interaction_id)
    return interaction_id


def test_untrainable_items_stay_out_of_the_queue_and_need_an_edit(proxy: ProxyServer) -> None:
    (good,) = logged(proxy, "fine question")
    error, stream = failed(proxy, "broken question"), cut(proxy, "a long answer please")
    client = proxy.admin(REVIEWER_TOKEN)
    assert [i["id"] for i in client.interactions(review="pending")["items"]] == [good]
    hidden = client.interactions(review="pending", trainable="false")["items"]
    assert [i["id"] for i in hidden] == [stream, error]
    assert {i["id"]: i["untrainable_reason"] for i in hidden} == {
        error: "upstream_error", stream: "upstream_cut"}
    assert len(client.interactions(review="pending", trainable="any")["items"]) == 3
    assert client.interaction(good)["trainable"] is True
    assert client.next_item(reviewer="ann")["item"]["id"] == good  # the queue skips them too

    for item_id, why in ((error, "error"), (stream, "cut the stream")):
        with pytest.raises(NotTrainable) as refused:
            client.review(item_id, "approve", reviewer="ann", expected_revision=0)
        assert refused.value.code == "not_trainable" and refused.value.status_code == 422
        assert why in refused.value.message and "edit" in refused.value.message
        assert client.interaction(item_id)["review"] == "pending"
    item = client.interaction(error)
    empty = [*item["original"], {"role": "assistant", "content": "  "}]
    with pytest.raises(NotTrainable):
        client.review(error, "edit", reviewer="ann", expected_revision=0, messages=empty)
    # the reviewer writes the answer: now it is approved, and trainable
    answer = [*item["original"], {"role": "assistant", "content": "Here is the answer."}]
    done = client.review(error, "edit", reviewer="ann", expected_revision=0, messages=answer)
    assert done["review"] == "approved"
    assert client.interaction(error)["trainable"] is True
    # a revise that supplies the answer keeps it pending, and lets the queue show it
    fixed = [*client.interaction(stream)["original"][:-1],
             {"role": "assistant", "content": "The whole answer."}]
    client.review(stream, "revise", reviewer="ann", expected_revision=0, messages=fixed)
    pending = client.interactions(review="pending")["items"]
    assert stream in [i["id"] for i in pending]
    client.review(stream, "approve", reviewer="ann", expected_revision=1)
    # rejecting an untrainable item is always possible
    other = failed(proxy, "another broken one")
    assert client.review(other, "reject", reviewer="ann", expected_revision=0,
                         reason="upstream down")["review"] == "rejected"


def test_bulk_approve_skips_and_counts_untrainable_items(proxy: ProxyServer) -> None:
    good = logged(proxy, "one", "two")
    bad = [failed(proxy, "three"), cut(proxy, "four please")]
    client = proxy.admin(REVIEWER_TOKEN)
    result = client.bulk_review("approve", reviewer="ann", ids=good + bad)
    assert result["skipped_untrainable"] == 2
    assert result["counts"] == {"ok": 2, "not_trainable": 2}
    statuses = {r["id"]: r["status"] for r in result["results"]}
    assert statuses == {good[0]: "ok", good[1]: "ok", bad[0]: "not_trainable",
                        bad[1]: "not_trainable"}
    assert {client.interaction(i)["review"] for i in bad} == {"pending"}
    # by filter: the pending queue's filter holds no untrainable item to begin with
    by_filter = client.bulk_review("approve", reviewer="ann",
                                   filter={"review": "pending", "trainable": "any"})
    assert by_filter["skipped_untrainable"] == 2 and by_filter["counts"] == {"not_trainable": 2}


def test_progress_counts_are_exact(proxy: ProxyServer) -> None:
    ids = logged(proxy, *(f"question {n}" for n in range(25)))
    failed(proxy, "broken")
    client = proxy.admin(REVIEWER_TOKEN)
    for item_id in ids[:3]:
        client.review(item_id, "approve", reviewer="ann", expected_revision=0)
    client.review(ids[3], "reject", reviewer="bob", expected_revision=0)
    client.next_item(reviewer="bob")
    ann = client.progress(reviewer="ann")
    assert ann["pending"] == 21 and ann["untrainable"] == 1 and ann["total"] == 26
    assert ann["reviewed_by_you"] == 3 and ann["reviewed"] == 4
    assert ann["claimed_by_others"] == 1 and ann["exact"] is True
    assert client.progress(reviewer="bob", q="question")["pending"] == 21
    filtered = client.progress(reviewer="ann", model="gpt-4o-mini")  # the joined scan
    assert (filtered["pending"], filtered["untrainable"], filtered["total"]) == (21, 0, 25)
    assert client.progress(reviewer="ann", model="fail-502")["untrainable"] == 1
    embedded = client.next_item(reviewer="ann", progress=True)["progress"]
    assert embedded["pending"] == 21 and embedded["claimed_by_others"] == 1


def in_store(store: str, fn: Callable[[Any], T], *, up_to: int | None = None) -> T:
    """Migrate the test's store (up to `up_to`), then run fn in one write."""
    db = open_store(store, read_threads=1)
    try:
        migrate_store(db, up_to=up_to)
        return db.write_sync(fn)
    finally:
        db.close()


def test_the_migration_lists_answerless_rows_logged_before_it(store: str) -> None:
    rows = [{"id": f"01900000-0000-7000-8000-00000000000{n}", "created_at": 1_700_000_000_000_000,
             "endpoint": "chat.completions", "traffic": "production",
             "request": json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
             "response": json.dumps({"choices": [{"index": 0, "message": {
                 "role": "assistant", "content": answer}}]}),
             "status_code": status, "finish": finish}
            for n, (answer, status, finish) in enumerate(
                [("fine", 200, "completed"), ("", 200, "completed"), (None, 500, "upstream_error"),
                 ("Sure, the", 200, "client_disconnected")])]
    older = to_arrow(rows).drop_columns(["sent_request"])  # a column of migration 44
    in_store(store, lambda con: insert_interactions(con, older), up_to=31)
    db = open_store(store, read_threads=1)
    try:
        assert 32 in migrate_store(db)
        listed = dict(db.read_sync(lambda con: con.execute(
            "SELECT interaction_id, reason FROM untrainable").fetchall()))
    finally:
        db.close()
    assert listed == {rows[1]["id"]: "no_answer", rows[2]["id"]: "upstream_error",
                      rows[3]["id"]: "client_disconnected"}


def _approved_before_the_rule(store: str) -> list[str]:
    """A database where an older tuneloop let a reviewer approve a 502 and a cut stream."""
    rows = [
        {"id": "01900000-0000-7000-8000-000000000001", "created_at": 1_700_000_000_000_000,
         "endpoint": "chat.completions", "model": "gpt-4o-mini", "traffic": "production",
         "request": json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
         "response": json.dumps({"error": {"message": "bad gateway"}}), "status_code": 502,
         "finish": "upstream_error"},
        {"id": "01900000-0000-7000-8000-000000000002", "created_at": 1_700_000_001_000_000,
         "endpoint": "chat.completions", "model": "gpt-4o-mini", "traffic": "production",
         "request": json.dumps({"messages": [{"role": "user", "content": "tell me more"}]}),
         "response": json.dumps({"choices": [{"index": 0, "message": {
             "role": "assistant", "content": "Sure, the first"}}]}),
         "status_code": 200, "finish": "upstream_cut", "stream": True},
    ]

    def write(con: Any) -> None:
        insert_interactions(con, to_arrow(rows))
        for row in rows:
            con.execute("INSERT INTO review_revisions VALUES (?, 1, 'approve', 'approved', "
                        "NULL, NULL, 'old', 'reviewer', NULL, now())", [row["id"]])
            con.execute("INSERT INTO reviews VALUES (?, 'approved', 1, NULL, 'old', now(), "
                        "NULL, 'gpt-4o-mini', NULL)", [row["id"]])

    in_store(store, write)
    return [r["id"] for r in rows]


def test_export_skips_approved_untrainable_items_with_a_warning(proxy_factory: Any,
                                                                tmp_path: Path,
                                                                store: str) -> None:
    untrainable = _approved_before_the_rule(store)
    proxy: ProxyServer = proxy_factory()
    ids = logged(proxy, *(f"How do I reset my password, case {n}?" for n in range(12)))
    client = proxy.admin(REVIEWER_TOKEN)
    client.bulk_review("approve", reviewer="ann", ids=ids)
    out = tmp_path / "exports" / "v1"
    result = run_cli(proxy, tmp_path, "export", "--name", "support", "--format", "chat",
                     "--out", str(out), "--validation", "0")
    assert result.exit_code == 0, result.output
    assert "untrainable_skipped" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["train"] == 12
    assert manifest["counts"]["skipped"] == {"untrainable": 2}
    assert any(w.startswith("untrainable_skipped (2)") for w in manifest["warnings"])
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == 12 and "Sure, the first" not in "".join(lines)
    lineage = [json.loads(line) for line in (out / "lineage.jsonl").read_text().splitlines()]
    skipped = {r["interaction_id"] for r in lineage if r["split"] == "skipped"}
    assert skipped == set(untrainable)


def test_a_snapshot_records_the_reviewer(proxy: ProxyServer, tmp_path: Path) -> None:
    ids = logged(proxy, *(f"Where is my order {n}?" for n in range(10)))
    client = proxy.admin(REVIEWER_TOKEN)
    client.bulk_review("approve", reviewer="ann", ids=ids)
    options = ExportOptions(name="orders", validation_fraction=0, workers=1)
    built = build_dataset(client, tmp_path / "orders", options, reviewer="Ann Lee")
    snapshot = client.dataset("orders", built.manifest["snapshot"]["version"])
    assert snapshot["created_by"] == "Ann Lee"
    again = build_dataset(client, tmp_path / "orders-2", options)
    assert client.dataset("orders", again.manifest["snapshot"]["version"])["created_by"] \
        == "reviewer"  # no name given: the token's role, as before


def test_the_queue_list_agrees_with_the_approval_rule(store: str) -> None:
    """mark_untrainable (SQL, at ingest) and untrainable_reason (Python, at approval) judge the
    same logged shapes the same way."""
    from storage.trainable import untrainable_reason

    chat_answers: list[Any] = [
        {"content": "fine"}, {"content": ""}, {"content": " \n\t"}, {"content": None},
        {"content": None, "tool_calls": [{"id": "c", "type": "function",
                                          "function": {"name": "f", "arguments": "{}"}}]},
        {"content": None, "tool_calls": []}, {"content": None, "function_call": {"name": "f"}},
        {"content": [{"type": "text", "text": "part"}]}, {"content": []}, None]
    responses: list[tuple[str, Any]] = [
        ("chat.completions", {"choices": [{"index": 0, "message": {"role": "assistant", **a}}]}
         if a is not None else {"choices": []}) for a in chat_answers]
    responses += [("completions", {"choices": [{"index": 0, "text": t}]})
                  for t in ("done", "", "   ")]
    responses += [("completions", {"choices": []}), ("responses", {"output": []}),
                  ("responses", {"output": [{"type": "message", "role": "assistant",
                                             "content": [{"type": "output_text",
                                                          "text": "hi"}]}]}),
                  ("chat.completions", None)]
    rows = []
    for endpoint, response in responses:
        for status, finish in ((200, "completed"), (200, "upstream_cut"), (429, "completed")):
            rows.append({"id": f"01900000-0000-7000-8000-{len(rows):012d}",
                         "created_at": 1_700_000_000_000_000 + len(rows), "endpoint": endpoint,
                         "traffic": "production", "status_code": status, "finish": finish,
                         "request": json.dumps({"messages": [{"role": "user", "content": "q"}],
                                                "prompt": "q", "input": "q"}),
                         "response": None if response is None else json.dumps(response)})
    listed = dict(in_store(store, lambda con: (
        insert_interactions(con, to_arrow(rows)),
        con.execute("SELECT interaction_id, reason FROM untrainable").fetchall())[1]))
    expected = {}
    for row in rows:
        reason = untrainable_reason(row["endpoint"], row["status_code"], row["finish"],
                                    json.loads(row["request"]),
                                    json.loads(row["response"]) if row["response"] else None)
        if reason is not None:
            expected[row["id"]] = reason
    assert listed == expected
