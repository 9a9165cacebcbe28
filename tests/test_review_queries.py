"""The review queries on a real DuckDB file, checked against a plain Python reference: every
filter combination, paginated through many id windows, must give exactly the reference ids."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from storage.db import connect
from storage.feedback import add_feedback
from storage.interactions import InteractionFilter
from storage.migrations import migrate
from storage.queue import ReviewQuery, find_ids
from storage.records import insert_interactions, to_arrow
from storage.review import ReviewAction, apply_reviews
from storage.search_index import index_batch, interaction_text
from storage.search_text import terms_of
from storage.stats import review_stats
from storage.store import Store, migrate_store, open_store
from storage.tags import change_tags

WORDS = ["refund", "shipping", "invoice", "delay", "password", "reset", "order", "broken"]
N = 3000


T0 = 1_700_000_000_000_000  # microseconds


def at(k: int) -> int:
    """Row k's created_at: its id's order, but for every 11th row (as another tool may
    write): a time elsewhere among the rows."""
    return T0 + (k * 1000 if k % 11 else (k * 7919) % N * 1000 + 500)


def moment(k: int) -> datetime:
    return datetime.fromtimestamp((T0 + k * 1000) / 1e6, UTC)


def synthetic(n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for k in range(n):
        words = [*rng.sample(WORDS, 2), f"w{k}"]
        endpoint = "embeddings" if k % 17 == 0 else "chat.completions"
        rows.append({
            "id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
            "created_at": at(k),
            "endpoint": endpoint, "model": rng.choice(["a", "b"]), "traffic": "production",
            "request": orjson.dumps({"messages": [{"role": "user",
                                                   "content": " ".join(words[:2])}]}).decode(),
            "response": orjson.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": words[2]}}]}).decode(),
            "status_code": 500 if k % 23 == 0 else 200,
            "tags": ["t1"] if k % 5 == 0 else [], "user_id": f"u{k % 7}",
        })
    return rows


@pytest.fixture(scope="module", params=[("duckdb", "in_id_order"), ("duckdb", "out_of_order"),
                                        ("postgres", "out_of_order")],
                ids=["duckdb-in_id_order", "duckdb-out_of_order", "postgres-out_of_order"])
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[str, Any]]]:
    """3,000 rows: past the queue's first id window (256), so its later windows are used."""
    rng = random.Random(7)
    rows = synthetic(N, rng)
    kind, order = request.param
    if kind == "postgres":
        spec: str | Path = request.getfixturevalue("pg_cluster").create_database()
    else:
        spec = tmp_path_factory.mktemp("q") / "q.duckdb"
    db = open_store(spec)
    migrate_store(db)

    def load(con: Any) -> dict[str, Any]:
        stored = list(rows)
        if order == "out_of_order":  # late appends (long streams, spool replays)
            rng.shuffle(stored)
        for start in range(0, N, 500):
            table = to_arrow(stored[start:start + 500])
            insert_interactions(con, table)
            index_batch(con, table)
            index_batch(con, table)  # a replayed batch indexes nothing twice
        reviewable = [r["id"] for r in rows if r["endpoint"] != "embeddings"]
        states: dict[str, str] = {}
        actions = []
        # the newest 400 reviewed (a queue worked from the top) and a random sprinkle
        for item_id in reviewable[-400:] + rng.sample(reviewable, 300):
            action = rng.choice(["approve", "reject", "needs_work"])
            actions.append(ReviewAction(item_id, action, "r"))
            states[item_id] = {"approve": "approved", "reject": "rejected",
                               "needs_work": "needs_work"}[action]
        results = apply_reviews(con, actions[:5])  # a few as parameters, the rest as one batch
        results += apply_reviews(con, actions[5:])
        for result in results:  # upstream errors can't be approved (no answer to train on)
            if result.status != "ok":
                assert result.status == "not_trainable", result
                states.pop(result.id, None)
        states.update({r.id: str(r.review) for r in results if r.status == "ok"})
        tagged = rng.sample([r["id"] for r in rows], 200)
        change_tags(con, tagged, ["gold"], ["t1"], "r")
        scores: dict[str, list[float]] = {}
        for item_id in rng.sample([r["id"] for r in rows], 150):
            score = rng.choice([-1.0, 0.0, 0.5, 1.0])
            add_feedback(con, item_id, score, None, None)
            scores.setdefault(item_id, []).append(score)
        return {"rows": rows, "states": states, "gold": set(tagged), "scores": scores}

    yield db, db.write_sync(load)
    db.close()


def reference(data: dict[str, Any], query: ReviewQuery) -> list[str]:
    found = []
    for row in data["rows"]:
        reviewable = row["endpoint"] != "embeddings"
        state = data["states"].get(row["id"], "pending") if reviewable else None
        tags = set(row["tags"]) - ({"t1"} if row["id"] in data["gold"] else set())
        tags |= {"gold"} if row["id"] in data["gold"] else set()
        # the synthetic texts are lower-case words and spaces: splitting is the reference
        text = set((orjson.loads(row["request"])["messages"][0]["content"] + " "
                    + orjson.loads(row["response"])["choices"][0]["message"]["content"]).split())
        scores = data["scores"].get(row["id"])
        base = query.base
        if (query.review and state != query.review) or (query.tag and query.tag not in tags) \
                or (base.model and row["model"] != base.model) \
                or (base.user and row["user_id"] != base.user) \
                or (base.has_error is not None and (row["status_code"] >= 400) != base.has_error) \
                or (base.since and row["created_at"] < base.since.timestamp() * 1e6) \
                or (base.until and row["created_at"] >= base.until.timestamp() * 1e6) \
                or (query.q and (not reviewable or not set(query.q.split()) <= text)) \
                or (query.min_score is not None
                    and (not scores or sum(scores) / len(scores) < query.min_score)):
            continue
        found.append(row["id"])
    return sorted(found, reverse=True)


QUERIES = [
    ReviewQuery(),
    ReviewQuery(review="pending"),
    ReviewQuery(review="approved"),
    ReviewQuery(review="needs_work", base=InteractionFilter(model="a")),
    ReviewQuery(review="pending", base=InteractionFilter(user="u3", has_error=False)),
    ReviewQuery(tag="gold"),
    ReviewQuery(tag="t1", review="pending"),
    ReviewQuery(q="refund"),
    ReviewQuery(q="refund delay", review="pending"),
    ReviewQuery(q="w2999"),
    ReviewQuery(q="w17 refund"),
    ReviewQuery(q="nonexistent"),
    ReviewQuery(min_score=0.5),
    ReviewQuery(min_score=-1, review="pending", base=InteractionFilter(model="b")),
    ReviewQuery(q="password", tag="gold", base=InteractionFilter(has_error=True)),
    # time ranges (on Postgres walked within the range's id bounds, storage/time_bounds.py)
    ReviewQuery(base=InteractionFilter(since=moment(300), until=moment(700))),
    ReviewQuery(base=InteractionFilter(since=moment(2990))),
    ReviewQuery(base=InteractionFilter(until=moment(40), model="a")),
    ReviewQuery(base=InteractionFilter(since=moment(5000))),
    ReviewQuery(review="pending", base=InteractionFilter(since=moment(100), until=moment(1900))),
    ReviewQuery(tag="gold", base=InteractionFilter(since=moment(0), until=moment(1500))),
    ReviewQuery(review="approved", base=InteractionFilter(since=moment(2000),
                                                          until=moment(2800))),
    ReviewQuery(q="refund", base=InteractionFilter(until=moment(1200))),
]


@pytest.mark.parametrize("query", QUERIES, ids=[f"q{n}" for n in range(len(QUERIES))])
@pytest.mark.parametrize("limit", [7, 500])
def test_pages_match_the_reference(world: tuple[Store, dict[str, Any]], query: ReviewQuery,
                                   limit: int) -> None:
    db, data = world
    expected = reference(data, query)
    got: list[str] = []

    def pages(con: Any) -> None:
        cursor: str | None = None
        for _ in range(N):
            page, cursor = find_ids(con, query, limit=limit, cursor=cursor)
            assert len(page) <= limit
            got.extend(page)
            if cursor is None:
                break
            assert len(page) == limit  # a cursor only comes with a full page

    db.read_sync(pages)
    assert got == expected


def test_upgrade_indexes_interactions_logged_before_the_index(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = connect(path)
    migrate(con, up_to=3)  # rows as that version logged them, without later columns
    insert_interactions(con, to_arrow(synthetic(20, random.Random(1))).drop_columns(
        ["usage_estimated", "source_id", "sent_request"]))
    con.close()
    con = connect(path)
    assert 13 in migrate(con)
    hits = find_ids(con, ReviewQuery(q="w5"), limit=10)[0]
    assert hits == [f"{0x01900005:08x}-0000-7000-8000-000000000000"]
    con.close()


def test_the_term_index_holds_each_word_once(world: tuple[Store, dict[str, Any]]) -> None:
    db, data = world
    reviewable = [r for r in data["rows"] if r["endpoint"] != "embeddings"]
    words = sum(len(terms_of(interaction_text(r["endpoint"], r["request"], r["response"])
                             or "")) for r in reviewable)
    assert db.read_sync(lambda con: con.execute(
        "SELECT count(*) FROM search_terms").fetchall()) == [(words,)]
    assert db.read_sync(lambda con: con.execute(
        "SELECT count(*) FROM search_docs").fetchall()) == [(len(reviewable),)]


def test_stats_match_the_reference(world: tuple[Store, dict[str, Any]]) -> None:
    db, data = world
    stats = db.read_sync(review_stats)
    expected_tags: dict[str, Counter[str]] = {}
    expected_models: dict[str, Counter[str]] = {}
    for row in data["rows"]:
        if row["endpoint"] == "embeddings":
            continue
        state = data["states"].get(row["id"], "pending")
        expected_models.setdefault(row["model"], Counter())[state] += 1
        tags = set(row["tags"])
        if row["id"] in data["gold"]:
            tags = (tags - {"t1"}) | {"gold"}
        for tag in tags:
            expected_tags.setdefault(tag, Counter())[state] += 1

    def table(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, int]]:
        return {r[key]: {s: r[s] for s in ("pending", "approved", "rejected", "needs_work")
                         if r[s]} for r in rows}

    assert table(stats["by_tag"], "tag") == {k: dict(v) for k, v in expected_tags.items()}
    assert table(stats["by_model"], "model") == {k: dict(v) for k, v in expected_models.items()}
    assert stats["totals"]["total"] == sum(sum(c.values()) for c in expected_models.values())
    assert stats["totals"]["not_reviewable"] == sum(
        r["endpoint"] == "embeddings" for r in data["rows"])


def test_words_are_lower_case_unicode_runs_of_at_most_64_characters() -> None:
    text = "Hello, hello WORLD " + "x" * 65 + " éclair über_all 42 ünïcode-ok"
    assert terms_of(text) == ["42", "hello", "ok", "world", "éclair", "über_all", "ünïcode"]
    assert terms_of("") == [] and terms_of("?!") == []
