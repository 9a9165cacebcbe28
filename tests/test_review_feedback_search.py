"""Feedback from apps, text search, stats and roles of the review API, on a real proxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from storage.feedback import FEEDBACK_SHOWN
from tests.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, ProxyServer, both_stores
from tests.test_review_api import chat, logged
from tuneloop.errors import BadRequest

pytestmark = both_stores


def test_feedback_reaches_reviewers(proxy: ProxyServer) -> None:
    good, bad, silent = logged(proxy, "good one", "bad one", "no feedback")
    with proxy.http() as http:
        created = http.post("/v1/feedback", json={"id": good, "score": 1, "comment": "great"})
        assert created.status_code == 201
        assert created.json()["interaction_id"] == good and created.json()["score"] == 1.0
        http.post("/v1/feedback", json={"id": good, "score": 0.5})
        http.post("/v1/feedback", json={"id": bad, "score": -1, "comment": "wrong"})
        missing = http.post("/v1/feedback", json={"id": "0190aaaa-0000-7000-8000-00000000000f",
                                                  "score": 1})
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"
        for body in ({"id": good, "score": 2}, {"id": good, "score": "1"}, {"id": good},
                     {"score": 1}, {"id": good, "score": True}, {"id": good, "score": 1,
                                                                 "comment": 5},
                     {"id": good, "score": 1, "extra": 1}):
            response = http.post("/v1/feedback", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["type"] == "invalid_request_error"
    admin = proxy.admin(REVIEWER_TOKEN)
    item = admin.interaction(good)
    assert item["score"] == 0.75 and item["feedback_count"] == 2
    assert [f["comment"] for f in item["feedback"]] == ["great", None]
    assert [i["id"] for i in admin.interactions(min_score=0.5)["items"]] == [good]
    assert {i["id"] for i in admin.interactions(min_score=-1)["items"]} == {good, bad}
    assert silent not in {i["id"] for i in admin.interactions(min_score=-1)["items"]}
    with pytest.raises(BadRequest):
        admin.interactions(min_score=3)


def test_an_items_feedback_is_bounded_and_counted_whole(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    """r12y MED 5: an app posting feedback without end made one item's answer tens of MB (a
    key's entries per interaction are bounded too: tests/test_feedback_limit.py; many keys)."""
    proxy = proxy_factory(feedback_max_per_key=FEEDBACK_SHOWN + 20)
    (spammed,) = logged(proxy, "spammed")
    with proxy.http() as http:
        for n in range(FEEDBACK_SHOWN + 20):
            assert http.post("/v1/feedback", json={"id": spammed, "score": -1,
                                                   "comment": f"c{n}"}).status_code == 201
    item = proxy.admin(REVIEWER_TOKEN).interaction(spammed)
    assert item["feedback_count"] == FEEDBACK_SHOWN + 20
    assert [f["comment"] for f in item["feedback"]] == [
        f"c{n}" for n in range(20, FEEDBACK_SHOWN + 20)]


def test_feedback_right_after_the_response_waits_for_ingest(proxy_factory: Any) -> None:
    proxy = proxy_factory(ingest_interval_ms=300)
    item_id = chat(proxy, "quick")
    with proxy.http() as http:  # sent before the interaction left the spool
        assert http.post("/v1/feedback", json={"id": item_id, "score": 1}).status_code == 201


def test_feedback_needs_an_issued_key_when_the_proxy_issues_keys(proxy_factory: Any) -> None:
    proxy = proxy_factory(issue_keys=True, openai_api_key="sk-held-by-the-proxy")
    key = proxy.admin().create_key("app")["key"]
    item_id = proxy.openai(api_key=key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "keyed"}]
    ).headers["x-tuneloop-id"]
    proxy.wait_logged(1)
    with proxy.http() as http:
        body = {"id": item_id, "score": -0.5}
        assert http.post("/v1/feedback", json=body).status_code == 401
        assert http.post("/v1/feedback", json=body,
                         headers={"authorization": "Bearer tl-wrong"}).status_code == 401
        ok = http.post("/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 201
    assert proxy.sql("SELECT source FROM feedback") == [[key[:7]]]


def test_text_search_over_prompts_and_completions(proxy: ProxyServer) -> None:
    refund, shipping, both = logged(proxy, "Where is my REFUND?", "shipping delays today",
                                    "refund for late shipping")
    admin = proxy.admin(REVIEWER_TOKEN)

    def found(**filters: Any) -> list[str]:
        return [i["id"] for i in admin.interactions(**filters)["items"]]

    assert found(q="refund") == [both, refund]  # case-insensitive, newest first
    assert found(q="shipping refund") == [both]  # every word must be there
    assert found(q="echo delays") == [shipping]  # the completion's text too
    assert found(q="refunds") == [both, refund]  # English stems: refunds, refund, refunded
    assert found(q="ship*") == [both, shipping]  # a prefix
    assert found(q="shipments") == []  # whole words (by stem): not a substring match
    assert found(q="refund", review="pending", limit=1) == [both]
    admin.review(both, "approve", reviewer="ann", expected_revision=0)
    assert found(q="refund", review="pending") == [refund]
    assert found(q="refund", review="approved") == [both]
    for bad in ("  ?!  ", "a b c d e f g h i"):
        with pytest.raises(BadRequest):
            admin.interactions(q=bad)


def test_search_leaves_out_the_shared_system_prompt_unless_asked(proxy: ProxyServer) -> None:
    """Every item here has the system prompt "be brief"; the fake answers "echo: <text>"."""
    japanese, english = logged(proxy, "パスワードを忘れました", "my password is brief")
    admin = proxy.admin(REVIEWER_TOKEN)

    def found(q: str, **options: Any) -> list[str]:
        return [i["id"] for i in admin.search(q, **options)["items"]]

    assert found("パスワード") == [japanese]  # no spaces between Japanese words
    assert found("忘れ", q_in="answers") == [japanese]  # the echoed answer
    assert found("brief") == [english]  # the user's word, not the shared system prompt
    assert found("brief", q_in="all") == [english, japanese]
    assert found("echo", q_in="answers") == [english, japanese]
    assert found("password", q_in="answers", review="pending") == [english]
    admin.review(english, "edit", reviewer="ann", expected_revision=0, messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "my password is brief"},
        {"role": "assistant", "content": "Use the reset link (リセット)."}])
    assert found("リセット", q_in="answers") == [english]
    assert [i["id"] for i in admin.interactions(q="echo", q_in="answers")["items"]] \
        == [english, japanese]  # any revision's words
    with pytest.raises(BadRequest, match="q_in"):
        found("brief", q_in="system")
    with pytest.raises(BadRequest, match="prefix"):
        found("b*")


def test_filters_of_the_proxy_issue_keep_working(proxy: ProxyServer) -> None:
    ok = chat(proxy, "fine", extra_headers={"x-tuneloop-user": "u-9"})
    proxy.upstream.state.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        chat(proxy, "broken")
    proxy.wait_logged(2)
    admin = proxy.admin(REVIEWER_TOKEN)
    (failed,) = [i["id"] for i in admin.interactions(status_code=500)["items"]]
    assert [i["id"] for i in admin.interactions(user="u-9")["items"]] == [ok]
    assert [i["id"] for i in admin.interactions(status_code=200)["items"]] == [ok]
    assert [i["id"] for i in admin.interactions(has_error=False)["items"]] == [ok]
    assert [i["id"] for i in admin.interactions(has_error=True)["items"]] == [failed]
    assert [i["id"] for i in admin.interactions(has_error=True, review="pending")["items"]] \
        == [failed]
    newest, oldest = admin.interactions(compact=True)["items"]
    assert "request" not in oldest and oldest["messages"][-1]["content"] == "echo: fine"
    assert newest["messages"][-1] == {"role": "user", "content": "broken"}  # no answer logged


def test_stats(proxy: ProxyServer) -> None:
    a, b, c = logged(proxy, "s1", "s2", "s3", extra_headers={"x-tuneloop-tags": "support"})
    d = logged(proxy, "s4", model="gpt-4o")[0]
    admin = proxy.admin(REVIEWER_TOKEN)
    admin.review(a, "approve", reviewer="ann", expected_revision=0)
    admin.review(b, "reject", reviewer="bob", reason="no", expected_revision=0)
    admin.review(d, "needs_work", reviewer="ann", expected_revision=0)
    admin.tag(c, reviewer="ann", add=["golden"])
    stats = admin.stats()
    assert stats["totals"] == {"pending": 1, "approved": 1, "rejected": 1, "needs_work": 1,
                               "total": 4, "not_reviewable": 0}
    assert sum(day["total"] for day in stats["by_day"]) == 4
    models = {m["model"]: m for m in stats["by_model"]}
    assert models["gpt-4o"]["needs_work"] == 1 and models["gpt-4o-mini"]["total"] == 3
    tags = {t["tag"]: t for t in stats["by_tag"]}
    assert tags["support"]["total"] == 3 and tags["support"]["approved"] == 1
    assert tags["golden"] == {"tag": "golden", "pending": 1, "approved": 0, "rejected": 0,
                              "needs_work": 0, "total": 1}
    assert sum(bucket["count"] for bucket in stats["token_histogram"]) == 4
    throughput = {(r["reviewer"], r["action"]): r["count"] for r in stats["reviewers"]}
    assert throughput == {("ann", "approve"): 1, ("bob", "reject"): 1, ("ann", "needs_work"): 1}
    assert admin.stats(since="2999-01-01T00:00:00Z")["totals"]["total"] == 0


def test_roles_no_token_or_a_wrong_one_is_401(proxy: ProxyServer) -> None:
    (item_id,) = logged(proxy, "roles")
    calls = [("GET", "/admin/interactions", None), ("GET", f"/admin/interactions/{item_id}", None),
             ("POST", f"/admin/interactions/{item_id}/review",
              {"action": "approve", "reviewer": "x", "expected_revision": 0}),
             ("POST", "/admin/interactions/bulk-review",
              {"action": "approve", "reviewer": "x", "ids": [item_id]}),
             ("POST", f"/admin/interactions/{item_id}/tags", {"reviewer": "x", "add": ["t"]}),
             ("POST", f"/admin/interactions/{item_id}/undo", {"reviewer": "x"}),
             ("GET", "/admin/stats", None)]
    with httpx.Client(base_url=proxy.url) as http:
        for method, path, body in calls:
            for headers in ({}, {"authorization": "Bearer wrong"}):
                response = http.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers)
        assert proxy.admin(REVIEWER_TOKEN).interaction(item_id)["revision"] == 0
        for token in (REVIEWER_TOKEN, ADMIN_TOKEN):
            response = http.get("/admin/stats", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 200
