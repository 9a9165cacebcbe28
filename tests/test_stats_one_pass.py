"""GET /admin/stats counts the interactions in one pass (GROUPING SETS) where it used to run
six scans: on the same random data, both stores, every time range, its answer must be the
old queries' answer exactly. The old shape is kept below as the reference."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from storage.backend.dialect import dialect_of
from storage.db import Connection
from storage.records import insert_interactions, to_arrow
from storage.review import ReviewAction, apply_reviews, undo
from storage.stats import (
    _DAY_US,
    _REVIEWABLE,
    REVIEWED,
    TOP_TAGS,
    _by_state,
    _day,
    _feedback,
    _range,
    _reviewers,
    review_stats,
)
from storage.tags import change_tags
from tests.store_support import connected

pytestmark = pytest.mark.parametrize("store", ["duckdb", "postgres"], indirect=True)

T0 = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
ENDPOINTS = ["chat.completions"] * 6 + ["completions", "responses", "embeddings", "moderations"]
MODELS = ["a", "b", "", None, "ft:a::v2"]
TAGS: list[list[str] | None] = [None, [], [], ["x"], ["y"], ["x", "y"], ["y", "x"], ["x", "x"],
                                ["z", "tier:gold"]]
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
    assert review_stats(con)["totals"]["total"] > 0


# -- the reference: review_stats as it was before the one-pass query ----------------------


def six_scans(con: Connection, since: datetime | None = None,
              until: datetime | None = None) -> dict[str, Any]:
    d = dialect_of(con)
    i_where, i_params = _range("created_at", since, until)
    reviewable = f"{i_where} AND endpoint IN ({_REVIEWABLE})"
    r_where, r_params = _range("interaction_created_at", since, until)

    def grouped(i_key: str, r_key: str) -> tuple[dict[Any, int], list[tuple[Any, str, int]]]:
        totals = dict(con.execute(f"SELECT {i_key} AS k, count(*) FROM interactions "
                                  f"WHERE {reviewable} GROUP BY k", i_params).fetchall())
        reviewed = con.execute(f"SELECT {r_key} AS k, state, count(*) FROM reviews "
                               f"WHERE {r_where} GROUP BY k, state", r_params).fetchall()
        return totals, [(k, s, c) for k, s, c in reviewed]

    by_day = _by_state(*grouped(d.int_div(d.epoch_us("created_at"), str(_DAY_US)),
                                d.int_div(d.epoch_us("interaction_created_at"), str(_DAY_US))),
                       "day")
    for row in by_day:
        row["day"] = _day(row["day"])
    by_model = _by_state(*grouped("coalesce(model, '')", "coalesce(model, '')"), "model")
    overall = _by_state(*grouped("1", "1"), "all")
    totals = overall[0] if overall else {"pending": 0, **dict.fromkeys(REVIEWED, 0), "total": 0}
    totals.pop("all", None)
    not_reviewable = con.execute(
        f"SELECT count(*) FROM interactions WHERE {i_where} AND endpoint NOT IN ({_REVIEWABLE})",
        i_params).fetchall()[0][0]
    return {
        "totals": {**totals, "not_reviewable": not_reviewable},
        "by_day": sorted(by_day, key=lambda r: r["day"]),
        "by_model": sorted(by_model, key=lambda r: (-r["total"], r["model"])),
        "by_tag": _old_by_tag(con, reviewable, i_params, since, until),
        "token_histogram": _old_token_histogram(con, reviewable, i_params),
        "reviewers": _reviewers(con, since, until),
        "feedback": _feedback(con, since, until),
    }


def _old_by_tag(con: Connection, reviewable: str, i_params: list[Any],
                since: datetime | None, until: datetime | None) -> list[dict[str, Any]]:
    d = dialect_of(con)
    totals: dict[str, int] = dict(con.execute(
        f"SELECT tag, count(*) FROM (SELECT unnest(tags) AS tag FROM interactions "
        f"WHERE {reviewable} AND {d.list_length('tags')} > 0) AS logged GROUP BY tag",
        i_params).fetchall())
    r_where, r_params = _range("interaction_created_at", since, until)
    reviewed: dict[tuple[str, str], int] = defaultdict(int)
    for tag, state, count in con.execute(
        f"SELECT tag, state, count(*) FROM (SELECT unnest(logged_tags) AS tag, state "
        f"FROM reviews WHERE {r_where} AND {d.list_length('logged_tags')} > 0) AS reviewed "
        "GROUP BY tag, state", r_params
    ).fetchall():
        reviewed[tag, state] += count
    t_where, t_params = _range("t.interaction_created_at", since, until)
    for tag, state, delta in con.execute(
        f"SELECT t.tag, coalesce(r.state, 'pending'), "
        f"sum(CASE WHEN t.removed THEN -1 ELSE 1 END) FROM interaction_tags t "
        f"LEFT JOIN reviews r ON r.interaction_id = t.interaction_id "
        f"WHERE {t_where} AND t.reviewable AND t.removed = t.logged "
        "GROUP BY t.tag, coalesce(r.state, 'pending')", t_params
    ).fetchall():
        totals[tag] = totals.get(tag, 0) + int(delta)
        reviewed[tag, state] += int(delta)
    rows = _by_state(totals, [(tag, state, n) for (tag, state), n in reviewed.items()], "tag")
    rows = [r for r in rows if r["total"] > 0]
    return sorted(rows, key=lambda r: (-r["total"], r["tag"]))[:TOP_TAGS]


def _old_token_histogram(con: Connection, reviewable: str,
                         i_params: list[Any]) -> list[dict[str, Any]]:
    log2 = dialect_of(con).log2("t")
    rows = con.execute(
        f"""
        SELECT CASE WHEN t < 64 THEN 0 ELSE CAST(pow(2, floor({log2})) AS BIGINT) END AS low,
               count(*)
        FROM (SELECT coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) AS t
              FROM interactions WHERE {reviewable}) AS tokens
        GROUP BY low ORDER BY low
        """, i_params).fetchall()
    return [{"low": low, "high": 64 if low == 0 else low * 2, "count": count}
            for low, count in rows]
