"""The search indexer's lanes per client key hold for requests to a plain model too (review
r12y HIGH 2): the key is spooled with every record and listed with the row at ingest
(`search_pending.client_key`, migration 55), where it was read from `route.client_key`, which
only a request to a route alias has: every other row was key '', one lane for all."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from storage.records import insert_interactions, to_arrow
from storage.search_index import SearchIndexer, queue_for_index
from storage.search_queue import BackgroundIndexer
from storage.store import Store, migrate_store, open_store
from tests.conftest import FakeUpstream, both_stores, running_proxy
from tests.test_search_fair import ordinary, random_words, wide
from tests.test_search_languages import item
from tests.test_search_queue import ingest, migrated

MODEL = "gpt-4o-mini"  # no route alias: the default deployment's requests
WIDE_KEY, SMALL_KEY = "sk-flood-0123456789abcdef", "sk-victim-0123456789abcdef"


def indexed(db: Store, ids: list[str]) -> int:
    return int(db.read_sync(lambda con: con.execute(
        "SELECT count(*) FROM search_docs WHERE interaction_id = ANY(?::VARCHAR[])",
        [ids]).fetchall())[0][0])


def wide_before_small(db: Store, wide_ids: list[str], small_ids: list[str]) -> int:
    """Index everything listed; how many of `wide_ids` were indexed by the write that indexed
    the last of `small_ids`."""
    seen: list[tuple[int, int]] = []
    # writes sized by rows only (not by time): the count must not depend on the machine's load
    indexer = BackgroundIndexer(
        db, SearchIndexer(None), write_budget_s=None,
        on_written=lambda _ids: seen.append((indexed(db, wide_ids), indexed(db, small_ids))))
    taken = asyncio.run(indexer.index_pending())
    assert taken == len(wide_ids) + len(small_ids)
    return next(w for w, s in seen if s == len(small_ids))


def pending_keys(db: Store) -> dict[str, str | None]:
    return {str(r[0]): r[1] for r in db.read_sync(lambda con: con.execute(
        "SELECT interaction_id, client_key FROM search_pending").fetchall())}


@both_stores
def test_a_keys_wide_requests_to_a_plain_model_do_not_hold_back_another_keys(
        store: str, tmp_path: Path, fake_openai: FakeUpstream) -> None:
    """Two apps with their own keys call a model that is no alias: one sends 12 requests at
    the caps, then the other 3 small ones. Before: both keys' rows were key '' (no route), and
    the small rows were indexed after all 12 wide ones; now after a quantum of them (3 at the
    caps, plus the write under way). The same key is listed for a routed request of a key
    (its `route.client_key`), and no key is the credential itself."""
    rng = random.Random(7)
    # every field past its cap: the system prompt, the user's words (which the fake upstream
    # echoes as the answer), and an earlier assistant turn of other words
    wide_text = [[{"role": "system", "content": random_words(rng, 5200)},
                  {"role": "assistant", "content": random_words(rng, 5200)},
                  {"role": "user", "content": random_words(rng, 5200)}] for _ in range(12)]
    with running_proxy(tmp_path, fake_openai, db=store, fault_injection=True) as proxy:
        admin = proxy.admin()
        admin.request("POST", "/admin/faults", json={"search_index_pause_seconds": 3600})
        admin.put_routes({"chat": {"targets": [{"model": MODEL}]}})
        flood, victim = proxy.openai(api_key=WIDE_KEY), proxy.openai(api_key=SMALL_KEY)

        def send(client: Any, messages: list[dict[str, str]], model: str = MODEL) -> str:
            raw = client.chat.completions.with_raw_response.create(model=model,
                                                                   messages=messages)
            return str(raw.headers["x-tuneloop-id"])

        def small(k: int) -> list[dict[str, str]]:
            return [{"role": "user", "content": f"where is order {k}"}]

        wide_ids = [send(flood, messages) for messages in wide_text]
        small_ids = [send(victim, small(k)) for k in range(3)]
        routed = send(victim, small(99), model="chat")
        proxy.wait_logged(len(wide_ids) + len(small_ids) + 1)
    with migrated(store) as db:
        keys = pending_keys(db)
        assert {keys[i] for i in wide_ids} != {keys[i] for i in small_ids}
        assert len({keys[i] for i in wide_ids}) == len({keys[i] for i in small_ids}) == 1
        route = orjson.loads(db.read_sync(lambda con: con.execute(
            "SELECT CAST(route AS VARCHAR) FROM interactions WHERE id = ?",
            [routed]).fetchall())[0][0])
        assert keys[routed] == route["client_key"] == keys[small_ids[0]]
        for key in keys.values():
            assert key and WIDE_KEY not in key and SMALL_KEY not in key
            assert "flood" not in key and "victim" not in key
        small_ids.append(routed)
        assert wide_before_small(db, wide_ids, small_ids) <= 4  # before: 12
        assert keys.keys().isdisjoint(pending_keys(db))


@both_stores
def test_keys_the_upstream_refused_are_one_lane(store: str, tmp_path: Path,
                                                fake_openai: FakeUpstream) -> None:
    """A made-up key per request, each refused by the upstream (401): one lane for all (the
    anonymous client's, as a request without a key), not a lane each, which no quantum would
    ever make heavy; an accepted key keeps its own."""
    with running_proxy(tmp_path, fake_openai, db=store, fault_injection=True) as proxy:
        proxy.admin().request("POST", "/admin/faults", json={"search_index_pause_seconds": 3600})
        refused = []
        for k in range(3):
            http = proxy.http()
            answer = http.post("/v1/chat/completions", headers={
                "authorization": f"Bearer sk-made-up-{k}", "x-fake-fail": "401"}, json={
                "model": MODEL, "messages": [{"role": "user", "content": f"made up {k}"}]})
            assert answer.status_code == 401
            refused.append(answer.headers["x-tuneloop-id"])
        anonymous = proxy.http().post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "no key"}]})
        accepted = proxy.http().post("/v1/chat/completions", headers={
            "authorization": f"Bearer {SMALL_KEY}"}, json={
            "model": MODEL, "messages": [{"role": "user", "content": "a key"}]})
        proxy.wait_logged(5)
    with migrated(store) as db:
        keys = pending_keys(db)
    assert {keys[i] for i in refused} == {keys[anonymous.headers["x-tuneloop-id"]]}
    assert keys[accepted.headers["x-tuneloop-id"]] not in {keys[i] for i in refused}


@both_stores
def test_the_key_is_listed_on_the_copy_and_the_insert_path(store: str) -> None:
    """Postgres lists a batch with COPY, and with INSERT ... ON CONFLICT when an id of it is
    listed already (a replayed spool segment); DuckDB with INSERT: each path lists the key."""
    first = [{**item(k, f"first {k}", "ok"), "client_key": f"key{k % 2}"} for k in range(4)]
    again = [first[0], *({**item(10 + k, f"again {k}", "ok"), "client_key": f"key{k % 2}"}
                         for k in range(3)), item(20, "spooled by an older version", "ok")]
    with migrated(store) as db:
        assert ingest(db, first) == 4
        db.write_sync(lambda con: queue_for_index(con, to_arrow(again)))  # ids 0, 10-12, 20
        keys = pending_keys(db)
    expected = {r["id"]: r.get("client_key") for r in first + again}
    assert keys == expected


@both_stores
def test_rows_listed_before_the_keys_are_indexed_in_one_lane(
        store: str) -> None:
    """A store with rows listed by a version before migration 55 (no key), then upgraded: they
    are indexed, as one lane ('') among the keys listed since; a row an older replica lists
    after the upgrade (rolling deploy) too."""
    rng = random.Random(8)
    old = [item(k, f"listed before the upgrade old{k}", "ok") for k in range(3)]
    db = open_store(store)
    try:
        migrate_store(db, up_to=54)

        def listed_by_old_version(con: Any, rows: list[dict[str, Any]]) -> None:
            insert_interactions(con, to_arrow(rows))
            con.execute("INSERT INTO search_pending (interaction_id, text_bytes) "
                        "SELECT unnest(?::VARCHAR[]), 100", [[r["id"] for r in rows]])

        db.write_sync(lambda con: listed_by_old_version(con, old))
        assert migrate_store(db)[0] == 55  # and any later ones
        flood = [wide(10 + k, rng) for k in range(8)]
        others = [ordinary(100 + k) for k in range(2)]
        assert ingest(db, flood) == len(flood)
        rolling = [item(200, "listed by an older replica rolling", "ok")]
        db.write_sync(lambda con: listed_by_old_version(con, rolling))
        assert ingest(db, others) == len(others)
        keys = pending_keys(db)
        assert [keys[r["id"]] for r in old + rolling] == [None] * 4
        small = [r["id"] for r in old + rolling + others]
        # the old rows came first; the others' and the rolling one's wait for a quantum at most
        assert wide_before_small(db, [r["id"] for r in flood], small) <= 4
        assert pending_keys(db) == {}
    finally:
        db.close()


def test_a_record_spooled_without_a_key_is_read_with_none() -> None:
    """A spool segment written by an older version (no `client_key` field) still parses, in
    Arrow and line by line."""
    from storage.records import arrow_from_segment, encode_record, parse_lines

    row = item(1, "hello", "ok")
    data = encode_record(row) + encode_record({**item(2, "hi", "ok"), "client_key": "k2"})
    table = arrow_from_segment(data)
    assert table is not None
    assert table["client_key"].to_pylist() == [None, "k2"]
    assert to_arrow(parse_lines(data, "test"))["client_key"].to_pylist() == [None, "k2"]
    assert pa.types.is_string(table.schema.field("client_key").type)
