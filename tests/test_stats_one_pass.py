"""GET /admin/stats on Postgres counts the interactions in one pass (GROUPING SETS, over the
index of migration 52) where it used to run six scans (DuckDB still does: they are faster
there). On the same random data, both stores, every time range, its answer must be the old
queries' answer exactly (the old shape is kept in bench/review_stats.py as the reference),
and both shapes must count alike on both stores."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bench.review_stats import six_scans
from storage.db import Connection
from storage.records import insert_interactions, to_arrow
from storage.review import ReviewAction, apply_reviews, undo
from storage.stats import _interaction_counts, _range, review_stats
from storage.tags import change_tags
from tests.store_support import connected

pytestmark = pytest.mark.parametrize("store", ["duckdb", "postgres"], indirect=True)

T0 = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
ENDPOINTS = ["chat.completions"] * 6 + ["completions", "responses", "embeddings", "moderations"]
# the last model and tag list are too wide for the Postgres stats index (migration 52): those
# rows are counted through its other index
WIDE = "".join(random.Random(3).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=3000))
MODELS = ["a", "b", "", None, "ft:a::v2", WIDE]
TAGS: list[list[str] | None] = [None, [], [], ["x"], ["y"], ["x", "y"], ["y", "x"], ["x", "x"],
                                ["z", "tier:gold"], [f"t{k}.{'x' * 60}" for k in range(32)]]
TOKENS = [None, 0, 1, 63, 64, 65, 127, 128, 1000, 4096, 70_000]


def rows(n: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for k in range(n):
        created = T0 + timedelta(microseconds=rng.randrange(0, 4 * 86_400_000_000))
        out.append({
            "id": f"{0x01900000 + k:08x}-0000-7000-8000-000000000000",
            "created_at": int(created.timestamp() * 1_000_000),
            "endpoint": rng.choice(ENDPOINTS), "model": rng.choice(MODELS),
            "traffic": "production",
            "request": orjson.dumps({"messages": [{"role": "user", "content": f"q{k}"}]}
                                    ).decode(),
            "response": orjson.dumps({"choices": [{"index": 0, "message": {
                "role": "assistant", "content": f"a{k}"}}]}).decode(),
            "status_code": 500 if rng.random() < 0.05 else 200,
            "prompt_tokens": rng.choice(TOKENS), "completion_tokens": rng.choice(TOKENS),
            "tags": rng.choice(TAGS),
        })
    for k, micros in enumerate([0, -1, -86_400_000_000, -86_400_000_001, 86_399_999_999]):
        out[k]["created_at"] = micros  # about 1970: the day numbers of both stores' formulas
    return out


@pytest.fixture
def con(store: str) -> Iterator[Connection]:
    with connected(store) as connection:
        yield connection


def test_one_pass_counts_as_the_six_scans_did(con: Connection) -> None:
    rng = random.Random(12)
    data = rows(1500, rng)
    insert_interactions(con, to_arrow(data))
    ids = [r["id"] for r in data]
    now = T0 + timedelta(days=5)
    results = apply_reviews(con, [ReviewAction(i, rng.choice(["approve", "reject", "needs_work"]),
                                               f"r{k % 3}") for k, i in
                                  enumerate(rng.sample(ids, 500))], now=now)
    reviewed = [r.id for r in results if r.status == "ok"]
    for item in reviewed[:40]:  # back to pending: counted in the total only
        undo(con, item, "r0", now=now)
    change_tags(con, rng.sample(ids, 150), ["gold"], ["x"], "r1", now=now)
    change_tags(con, rng.sample(ids, 100), ["x"], ["gold", "y"], "r2", now=now)
    day = timedelta(days=1)
    ranges = [(None, None), (T0 + day, None), (None, T0 + 2 * day), (T0 + day / 3, T0 + 2 * day),
              (T0 + timedelta(microseconds=1), T0 + timedelta(microseconds=2)),
              (T0 + 30 * day, None)]
    for since, until in ranges:
        assert review_stats(con, since, until) == six_scans(con, since, until), (since, until)
        where, params = _range("created_at", since, until)  # both shapes on both stores
        assert (_interaction_counts(con, where, params, one_pass=True)
                == _interaction_counts(con, where, params, one_pass=False)), (since, until)
        for top in (1, 2, 4):  # fewer than the range's models: the rest summed in one row
            assert (_interaction_counts(con, where, params, one_pass=True, top_models=top)
                    == _interaction_counts(con, where, params, one_pass=False,
                                           top_models=top)), (since, until, top)
            whole = six_scans(con, since, until)["by_model"]
            capped = review_stats(con, since, until, top_models=top)["by_model"]
            assert capped[:top] == whole[:top], (since, until, top)
            if len(whole) > top:
                assert capped[top:] == [{"model": None, "models": len(whole) - top, **{
                    state: sum(r[state] for r in whole[top:]) for state in
                    ("pending", "approved", "rejected", "needs_work", "total")}}]
            else:
                assert len(capped) == len(whole)
    assert review_stats(con)["totals"]["total"] > 0
