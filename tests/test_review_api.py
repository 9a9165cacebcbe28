"""The review admin API against a real proxy on loopback with a real DuckDB file: the queue,
review actions and their revisions, conflicts, undo, bulk actions and tags."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import REVIEWER_TOKEN, ProxyServer, both_stores
from tuneloop.errors import BadRequest, Conflict, NotFound

pytestmark = both_stores


def chat(proxy: ProxyServer, text: str, model: str = "gpt-4o-mini", **kwargs: Any) -> str:
    raw = proxy.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "be brief"},
                               {"role": "user", "content": text}], **kwargs)
    return str(raw.headers["x-tuneloop-id"])


def logged(proxy: ProxyServer, *texts: str, **kwargs: Any) -> list[str]:
    ids = [chat(proxy, text, **kwargs) for text in texts]
    proxy.wait_for("SELECT count(*) FROM interactions WHERE id IN ("
                   + ", ".join(f"'{i}'" for i in ids) + ")", lambda r: r[0][0] == len(ids))
    return ids


def test_queue_flow_approve_and_the_queue_moves_on(proxy: ProxyServer) -> None:
    first, second, third = logged(proxy, "one", "two", "three")
    reviewer = proxy.admin(REVIEWER_TOKEN)
    queue = reviewer.interactions(review="pending")
    assert [item["id"] for item in queue["items"]] == [third, second, first]  # newest first
    head = queue["items"][0]
    assert head["review"] == "pending" and head["revision"] == 0
    assert head["model"] == "gpt-4o-mini" and head["created_at"] and head["tags"] == []
    assert head["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "three"},
                                {"role": "assistant", "content": "echo: three"}]

    done = reviewer.review(third, "approve", reviewer="ann", expected_revision=0)
    assert done == {"id": third, "status": "ok", "review": "approved", "revision": 1}
    assert [i["id"] for i in reviewer.interactions(review="pending")["items"]] == [second, first]
    approved = reviewer.interactions(review="approved")["items"]
    assert [(i["id"], i["revision"], i["reviewed_by"]) for i in approved] == [(third, 1, "ann")]
    page = reviewer.interactions(review="pending", limit=1)
    assert [i["id"] for i in page["items"]] == [second] and page["next_cursor"] == second
    rest = reviewer.interactions(review="pending", limit=1, cursor=page["next_cursor"])
    assert [i["id"] for i in rest["items"]] == [first] and rest["next_cursor"] is None


def test_edit_keeps_the_original_and_records_revisions(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "what is 2+2")
    admin = proxy.admin(REVIEWER_TOKEN)
    before = proxy.sql(f"SELECT request::VARCHAR, response::VARCHAR FROM interactions "
                       f"WHERE id = '{item_id}'")
    original = admin.interaction(item_id)["original"]
    edited = [*original[:-1], {"role": "assistant", "content": "4"}]
    result = admin.review(item_id, "edit", reviewer="bob", messages=edited, expected_revision=0,
                          reason="wrong answer")
    assert result["review"] == "approved" and result["revision"] == 1

    item = admin.interaction(item_id)
    assert item["original"] == original and original[-1]["content"] == "echo: what is 2+2"
    assert item["current"] == edited and item["messages"] == edited and item["edited"] is True
    assert item["review"] == "approved" and item["revision"] == 1
    (revision,) = item["revisions"]
    assert revision["action"] == "edit" and revision["reviewer"] == "bob"
    assert revision["reason"] == "wrong answer" and revision["revision"] == 1
    assert revision["messages"] == edited and revision["role"] == "reviewer"
    assert revision["created_at"]
    # the logged row is as it was
    assert proxy.sql(f"SELECT request::VARCHAR, response::VARCHAR FROM interactions "
                     f"WHERE id = '{item_id}'") == before
    assert item["response"]["choices"][0]["message"]["content"] == "echo: what is 2+2"
    # the edited text is searchable
    assert [i["id"] for i in admin.interactions(q="4")["items"]] == [item_id]


def test_stale_expected_revision_is_409_and_changes_nothing(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "race me")
    ann, bob = proxy.admin(REVIEWER_TOKEN), proxy.admin()
    ann.review(item_id, "approve", reviewer="ann", expected_revision=0)
    with pytest.raises(Conflict) as caught:
        bob.review(item_id, "reject", reviewer="bob", reason="bad", expected_revision=0)
    assert caught.value.status_code == 409 and "revision 1" in caught.value.message
    item = ann.interaction(item_id)
    assert (item["review"], item["revision"]) == ("approved", 1)
    assert [r["reviewer"] for r in item["revisions"]] == ["ann"]
    bob.review(item_id, "reject", reviewer="bob", reason="bad", expected_revision=1)
    item = ann.interaction(item_id)
    assert (item["review"], item["revision"]) == ("rejected", 2)
    assert item["revisions"][-1]["role"] == "admin"


def test_actions_undo_and_nothing_left_to_undo(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "undo me")
    admin = proxy.admin(REVIEWER_TOKEN)
    original = admin.interaction(item_id)["original"]
    fixed = [*original[:-1], {"role": "assistant", "content": "fixed"}]
    admin.review(item_id, "revise", reviewer="synthesize", messages=fixed, expected_revision=0)
    item = admin.interaction(item_id)
    assert (item["review"], item["revision"], item["current"]) == ("pending", 1, fixed)
    admin.review(item_id, "needs_work", reviewer="ann", reason="tone", expected_revision=1)
    admin.review(item_id, "approve", reviewer="ann", expected_revision=2)
    assert admin.interaction(item_id)["current"] == fixed  # approve keeps the revised answer

    assert admin.undo(item_id, reviewer="ann")["review"] == "needs_work"
    assert admin.undo(item_id, reviewer="ann", expected_revision=4)["review"] == "pending"
    item = admin.interaction(item_id)
    assert (item["review"], item["revision"], item["current"]) == ("pending", 5, fixed)
    last = admin.undo(item_id, reviewer="ann")
    item = admin.interaction(item_id)
    assert (last["review"], item["revision"], item["current"]) == ("pending", 6, original)
    assert [r["action"] for r in item["revisions"]] == [
        "revise", "needs_work", "approve", "undo", "undo", "undo"]
    assert [r["restores"] for r in item["revisions"][3:]] == [2, 1, 0]
    with pytest.raises(Conflict, match="nothing to undo"):
        admin.undo(item_id, reviewer="ann")
    with pytest.raises(Conflict):
        admin.undo(item_id, reviewer="ann", expected_revision=2)
    with pytest.raises(NotFound):
        admin.undo("0190aaaa-0000-7000-8000-000000000000", reviewer="ann")


def test_bad_review_requests_get_clear_400s(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "validate")
    admin = proxy.admin(REVIEWER_TOKEN)
    path = f"/admin/interactions/{item_id}/review"
    good = {"action": "approve", "reviewer": "ann", "expected_revision": 0}
    cases = [
        ({**good, "action": "bless"}, "action"),
        ({k: v for k, v in good.items() if k != "expected_revision"}, "expected_revision"),
        ({**good, "expected_revision": "0"}, "expected_revision"),
        ({k: v for k, v in good.items() if k != "reviewer"}, "reviewer"),
        ({**good, "action": "edit"}, "messages"),
        ({**good, "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({**good, "action": "edit", "messages": [{"role": "user", "content": "x"}]}, "messages"),
        ({**good, "action": "edit", "messages": [{"role": "wizard", "content": "x"}]},
         "messages"),
        ({**good, "action": "edit", "messages": "hello"}, "messages"),
    ]
    for body, param in cases:
        with pytest.raises(BadRequest) as caught:
            admin.request("POST", path, json=body)
        assert caught.value.status_code == 400, body
        assert param in caught.value.message, (body, caught.value.message)
    with pytest.raises(BadRequest):
        admin.request("POST", path, json=["not", "an", "object"])
    with pytest.raises(NotFound):
        admin.review("0190aaaa-0000-7000-8000-000000000000", "approve", reviewer="ann",
                     expected_revision=0)
    assert admin.interaction(item_id)["revision"] == 0


def test_message_lists_of_each_endpoint(proxy: ProxyServer) -> None:
    client = proxy.openai()
    chat_id = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", n=3, messages=[{"role": "user", "content": "pick"}]
    ).headers["x-tuneloop-id"]
    legacy_id = client.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi"
    ).headers["x-tuneloop-id"]
    responses_id = client.responses.with_raw_response.create(
        model="gpt-4o-mini", instructions="be kind", input="hello there"
    ).headers["x-tuneloop-id"]
    embedding_id = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="vector"
    ).headers["x-tuneloop-id"]
    proxy.wait_logged(4)
    admin = proxy.admin(REVIEWER_TOKEN)

    item = admin.interaction(chat_id)
    assert item["original"][-1] == {"role": "assistant", "content": "echo: pick"}
    assert [a["content"] for a in item["alternatives"]] == ["echo: pick (1)", "echo: pick (2)"]
    legacy = admin.interaction(legacy_id)["original"]
    assert legacy[0] == {"role": "user", "content": "Say hi"}
    assert legacy[1]["role"] == "assistant" and legacy[1]["content"].strip()
    assert admin.interaction(responses_id)["original"] == [
        {"role": "system", "content": "be kind"}, {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "echo: hello there"}]

    embedding = admin.interaction(embedding_id)
    assert embedding["reviewable"] is False and embedding["review"] is None
    with pytest.raises(BadRequest) as caught:
        admin.review(embedding_id, "approve", reviewer="ann", expected_revision=0)
    assert caught.value.code == "not_reviewable"
    assert embedding_id not in {i["id"] for i in admin.interactions(review="pending")["items"]}


def test_bulk_review_by_ids_answers_per_item(proxy: ProxyServer) -> None:
    a, b, c = logged(proxy, "bulk a", "bulk b", "bulk c")
    embedding_id = proxy.openai().embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="v").headers["x-tuneloop-id"]
    proxy.wait_logged(4)
    admin = proxy.admin(REVIEWER_TOKEN)
    admin.review(c, "approve", reviewer="ann", expected_revision=0)
    missing = "0190aaaa-0000-7000-8000-000000000000"
    answer = admin.bulk_review("reject", reviewer="bob", reason="off-topic",
                               ids=[a, b, c, missing, embedding_id],
                               expected_revisions={c: 0})
    statuses = {r["id"]: r["status"] for r in answer["results"]}
    assert statuses == {a: "ok", b: "ok", c: "conflict", missing: "not_found",
                        embedding_id: "not_reviewable"}
    assert answer["counts"] == {"ok": 2, "conflict": 1, "not_found": 1, "not_reviewable": 1}
    rejected = admin.interactions(review="rejected")["items"]
    assert {i["id"] for i in rejected} == {a, b}
    assert admin.interaction(a)["revisions"][0]["reason"] == "off-topic"
    assert admin.interaction(c)["review"] == "approved"
    with pytest.raises(BadRequest):
        admin.bulk_review("edit", reviewer="bob", ids=[a])
    with pytest.raises(BadRequest):
        admin.request("POST", "/admin/interactions/bulk-review",
                      json={"action": "approve", "reviewer": "bob", "ids": [a],
                            "filter": {"model": "x"}})


def test_bulk_review_by_filter(proxy: ProxyServer) -> None:
    mini = logged(proxy, "m1", "m2", model="gpt-4o-mini")
    big = logged(proxy, "b1", model="gpt-4o")
    admin = proxy.admin(REVIEWER_TOKEN)
    answer = admin.bulk_review("approve", reviewer="ann",
                               filter={"review": "pending", "model": "gpt-4o-mini"})
    assert {r["id"] for r in answer["results"]} == set(mini)
    assert answer["truncated"] is False and answer["counts"] == {"ok": 2}
    assert [i["id"] for i in admin.interactions(review="pending")["items"]] == big
    for bad in ({"reveiw": "pending"}, {}, {"review": "maybe"}, {"model": ["a"]}):
        with pytest.raises(BadRequest):
            admin.bulk_review("approve", reviewer="ann", filter=bad)
    capped = admin.bulk_review("reject", reviewer="ann", filter={"review": "approved"},
                               max_items=1)
    assert capped["truncated"] is True and len(capped["results"]) == 1


def test_tags_are_added_and_removed_beside_the_logged_ones(proxy: ProxyServer) -> None:
    a, b = logged(proxy, "tag a", "tag b", extra_headers={"x-tuneloop-tags": "support"})
    admin = proxy.admin(REVIEWER_TOKEN)
    assert admin.tag(a, reviewer="ann", add=["golden", "tone:ok"], remove=["support"]) == {
        "id": a, "tags": ["golden", "tone:ok"]}
    assert [i["id"] for i in admin.interactions(tag="golden")["items"]] == [a]
    assert [i["id"] for i in admin.interactions(tag="support")["items"]] == [b]
    assert admin.interaction(a)["tags"] == ["golden", "tone:ok"]
    assert admin.interaction(a)["logged_tags"] == ["support"]
    assert proxy.sql(f"SELECT tags FROM interactions WHERE id = '{a}'") == [[["support"]]]
    answer = admin.bulk_tags([a, b, "nope"], reviewer="ann", add=["batch7"])
    assert answer["counts"] == {"ok": 2, "not_found": 1}
    assert {i["id"] for i in admin.interactions(tag="batch7")["items"]} == {a, b}
    for bad in (["has space"], ["x" * 65], "golden", [1]):
        with pytest.raises(BadRequest):
            admin.tag(a, reviewer="ann", add=bad)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        admin.tag(a, reviewer="ann", add=["x"], remove=["x"])
    with pytest.raises(NotFound):
        admin.tag("0190aaaa-0000-7000-8000-000000000000", reviewer="ann", add=["x"])
