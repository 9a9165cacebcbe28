"""Feedback is bounded per (interaction, key) and stats per model, on a real proxy (review r12y
MED 5: one key posted 12,619 entries on one interaction in 35 s; LOW 6: 14,584 client-chosen
model names made GET /admin/stats 1.7 MB)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from storage.backend import is_postgres_url
from storage.feedback import add_feedback, feedback_summary
from storage.online_indexes import index_valid
from storage.records import insert_interactions, to_arrow
from storage.store import migrate_store, open_store
from tests.conftest import REVIEWER_TOKEN, ProxyServer, both_stores
from tests.test_review_api import logged
from tuneloop.errors import Conflict

pytestmark = both_stores


def stored(proxy: ProxyServer, interaction_id: str) -> dict[str, int]:
    return {source or "": n for source, n in proxy.sql(
        "SELECT source, count(*) FROM feedback "
        f"WHERE interaction_id = '{interaction_id}' GROUP BY source")}


def test_past_the_limit_a_keys_feedback_is_refused_and_not_stored(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(issue_keys=True, openai_api_key="sk-held-by-the-proxy",
                          feedback_max_per_key=3)
    admin = proxy.admin()
    app, other = admin.create_key("app")["key"], admin.create_key("other")["key"]
    client = proxy.openai(api_key=app)
    first, second = (client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    ).headers["x-tuneloop-id"] for text in ("one", "two"))
    proxy.wait_logged(2)

    def post(key: str, interaction_id: str, n: int) -> httpx.Response:
        with proxy.http() as http:
            return http.post("/v1/feedback", headers={"authorization": f"Bearer {key}"},
                             json={"id": interaction_id, "score": -1, "comment": f"c{n}"})

    for n in range(3):
        assert post(app, first, n).status_code == 201
    refused = post(app, first, 3)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "feedback_limit" and error["type"] == "conflict_error"
    assert "3 feedback entries" in error["message"] and error["param"] == "id"
    assert refused.headers["x-should-retry"] == "false"
    # the official SDK gets its ConflictError (it does not retry: x-should-retry)
    with pytest.raises(openai.ConflictError):
        client.post("/feedback", cast_to=object, body={"id": first, "score": 1})
    assert stored(proxy, first) == {app[:7]: 3}
    assert post(other, first, 0).status_code == 201  # another key on the same interaction
    assert post(app, second, 0).status_code == 201  # the same key on another interaction
    assert stored(proxy, first) == {app[:7]: 3, other[:7]: 1}
    item = proxy.admin(REVIEWER_TOKEN).interaction(first)
    assert item["feedback_count"] == 4
    assert [f["comment"] for f in item["feedback"]] == ["c0", "c1", "c2", "c0"]


async def _post_all(urls: list[str], interaction_id: str, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(*(
            http.post(f"{urls[n % len(urls)]}/v1/feedback",
                      json={"id": interaction_id, "score": 1, "comment": f"c{n}"})
            for n in range(count)))
    return [a.status_code for a in answers]


def test_concurrent_feedback_stores_at_most_the_limit(
        proxy_factory: Callable[..., ProxyServer], store: str) -> None:
    """40 posts at once (on Postgres through two replicas of one store): exactly the limit is
    stored, each check and insert being one store write (one at a time, across replicas)."""
    proxy = proxy_factory(feedback_max_per_key=5)
    replicas = [proxy]
    if is_postgres_url(store):
        replicas.append(proxy_factory(feedback_max_per_key=5,
                                      state_dir=proxy.settings.state_dir.parent / "second"))
    (target,) = logged(proxy, "rated by many at once")
    statuses = asyncio.run(_post_all([r.url for r in replicas], target, 40))
    assert sorted(statuses) == [201] * 5 + [409] * 35
    assert stored(proxy, target) == {"": 5}


def test_stats_answer_the_top_models_and_the_others_summed(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(stats_top_models=2)
    sizes = {"big": 4, "mid": 3, "small-a": 2, "small-b": 1, "small-c": 1}
    ids: dict[str, list[str]] = {
        model: logged(proxy, *(f"{model} {n}" for n in range(count)), model=model)
        for model, count in sizes.items()}
    reviewer = proxy.admin(REVIEWER_TOKEN)
    for interaction_id in (ids["big"][0], ids["small-a"][0], ids["small-c"][0]):
        reviewer.review(interaction_id, "approve", reviewer="ann", expected_revision=0)
    reviewer.review(ids["small-b"][0], "reject", reviewer="ann", expected_revision=0,
                    reason="wrong")
    stats = reviewer.stats()
    rows: list[dict[str, Any]] = stats["by_model"]
    assert [r["model"] for r in rows] == ["big", "mid", None]
    assert rows[0] == {"model": "big", "pending": 3, "approved": 1, "rejected": 0,
                       "needs_work": 0, "total": 4}
    assert rows[2] == {"model": None, "models": 3, "pending": 1, "approved": 2, "rejected": 1,
                       "needs_work": 0, "total": 4}
    for state in ("pending", "approved", "rejected", "needs_work", "total"):
        assert sum(r[state] for r in rows) == stats["totals"][state], state


def test_a_store_from_before_migration_56_keeps_its_feedback_under_the_limit(
        store: str) -> None:
    """Entries stored before the limit (more than it from one key) stay; that key gets no
    more on that interaction; Postgres gets the index the count reads (built online)."""
    db = open_store(store if is_postgres_url(store) else Path(store))
    try:
        migrate_store(db, up_to=54)
        rated = "01900000-0000-7000-8000-000000000001"

        def old_rows(con: Any) -> None:
            insert_interactions(con, to_arrow([{
                "id": rated, "created_at": 1_790_000_000_000_000, "endpoint": "chat.completions",
                "model": "gpt-4o-mini", "traffic": "production", "request": "{}",
                "response": "{}", "status_code": 200}]))
            for n in range(25):
                con.execute("INSERT INTO feedback VALUES (?, ?, -1, NULL, 'tl-flood', ?)",
                            [f"fb_old{n}", rated, datetime.now(UTC)])
        db.write_sync(old_rows)
        migrate_store(db)
        if is_postgres_url(store):
            assert db.read_sync(lambda con: index_valid(con, "feedback_by_interaction"))
        with pytest.raises(Conflict):
            db.write_sync(lambda con: add_feedback(con, rated, 1, None, "tl-flood"))
        db.write_sync(lambda con: add_feedback(con, rated, 1, None, "tl-other"))
        assert db.read_sync(lambda con: feedback_summary(con, [rated]))[rated][
            "feedback_count"] == 26
    finally:
        db.close()
