"""One key's wide rows can't hold back the other keys' rows, nor grow the index without bound
(review r12x3 MED 2): the background indexer shares its work between client keys
(storage.search_fair), and an interaction adds at most MAX_ROW_WORDS words for prefix search
(storage.search_forward), on every way into the index."""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from storage.queue import ReviewQuery, find_ids
from storage.search_forward import MAX_FIELD_TERMS, MAX_ROW_WORDS, forward_index
from storage.search_index import SearchIndexer, index_edit
from storage.search_queue import BackgroundIndexer
from storage.store import Store
from tests.conftest import both_stores
from tests.test_search_languages import item
from tests.test_search_queue import count, ingest, migrated

# the most an interaction writes: postings of 3 capped fields, and its words
ROW_BOUND = 3 * MAX_FIELD_TERMS + MAX_ROW_WORDS


def random_words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(n))


def keyed(row: dict[str, Any], key: str) -> dict[str, Any]:
    """The record of a request of client `key` to a plain model (no route): the key is
    spooled with it and listed with the row (`search_pending.client_key`)."""
    return {**row, "client_key": key}


def wide(k: int, rng: random.Random, key: str = "flood") -> dict[str, Any]:
    """A request at the caps: every field wider than MAX_FIELD_TERMS new random words."""
    extra = MAX_FIELD_TERMS + 200
    return keyed(item(k, random_words(rng, extra), random_words(rng, extra),
                      system=random_words(rng, extra)), key)


def ordinary(k: int) -> dict[str, Any]:
    return keyed(item(k, f"where is my order ordinary{k}", "it shipped"), "other")


@pytest.fixture
def db(store: str) -> Iterator[Store]:
    with migrated(store) as opened:
        yield opened


def indexed(db: Store, ids: list[str]) -> int:
    return int(db.read_sync(lambda con: con.execute(
        "SELECT count(*) FROM search_docs WHERE interaction_id = ANY(?::VARCHAR[])",
        [ids]).fetchall())[0][0])


def index_rows(db: Store, interaction: str) -> int:
    """The rows of the index an interaction has: postings, its words, its keys."""
    return int(db.read_sync(lambda con: con.execute(
        "SELECT (SELECT count(*) FROM search_terms WHERE interaction_id = ?) + "
        "(SELECT count(*) FROM search_words WHERE interaction_id = ?)",
        [interaction, interaction]).fetchall())[0][0])


def writes_until(db: Store, done: Callable[[], bool]) -> tuple[list[bool], BackgroundIndexer]:
    """An indexer whose writes are sized by rows only (not by time: this counts writes) and
    which records, after each of its write transactions, whether `done()` holds."""
    seen: list[bool] = []
    return seen, BackgroundIndexer(db, SearchIndexer(None), write_budget_s=None,
                                   on_written=lambda _ids: seen.append(done()))


@both_stores
def test_other_keys_rows_are_indexed_within_a_few_writes_of_a_keys_wide_rows(
        db: Store) -> None:
    """Before: the oldest rows first, so the rows of 'other' listed after 12 capped rows of
    'flood' waited for all of them (12 write transactions; 3 s a row on the reviewed
    Postgres). Now 'flood' writes a quantum (KEY_TERMS rows of index: 4 such rows), then the
    others' rows go; and once it is known heavy, the others' rows go first."""
    rng = random.Random(3)
    flood = [wide(k, rng) for k in range(12)]
    others = [ordinary(100 + k) for k in range(3)]
    assert ingest(db, flood) == len(flood)
    assert ingest(db, others) == len(others)
    other_ids = [r["id"] for r in others]
    seen, indexer = writes_until(db, lambda: indexed(db, other_ids) == len(other_ids))
    assert asyncio.run(indexer.index_pending()) == len(flood) + len(others)
    assert count(db, "SELECT count(*) FROM search_pending") == 0  # 'flood' in quanta, all
    assert seen.index(True) + 1 <= 3, seen  # before: the 12th write
    # more of both: the known heavy key's rows now wait behind the others' from the first write
    more_flood = [wide(20 + k, rng) for k in range(4)]
    more_others = [ordinary(200 + k) for k in range(2)]
    assert ingest(db, more_flood) == len(more_flood)
    assert ingest(db, more_others) == len(more_others)
    other_ids[:] = [r["id"] for r in more_others]
    seen.clear()
    assert asyncio.run(indexer.index_pending()) == len(more_flood) + len(more_others)
    assert seen[0], seen  # before: the 4th write
    assert count(db, "SELECT count(*) FROM search_pending") == 0
    hits = db.read_sync(lambda con: find_ids(con, ReviewQuery(q="ordinary201"), limit=5)[0])
    assert hits == [more_others[1]["id"]]


@both_stores
def test_an_interaction_writes_a_bounded_number_of_index_rows(db: Store) -> None:
    """Every field at its cap: at most 3 x MAX_FIELD_TERMS postings and MAX_ROW_WORDS words,
    by the background indexer and by an edit alike (before: 15,000 words)."""
    rng = random.Random(4)
    rows = [wide(k, rng) for k in range(2)]
    assert ingest(db, rows) == len(rows)
    assert asyncio.run(BackgroundIndexer(db, SearchIndexer(None)).index_pending()) == 2
    first = rows[0]["id"]
    assert index_rows(db, first) == ROW_BOUND
    # the words past an interaction's first MAX_ROW_WORDS: found whole, not by a prefix
    request = orjson.loads(rows[0]["request"])
    system_words = request["messages"][0]["content"].split()
    early, late = system_words[10], system_words[MAX_ROW_WORDS + 10]

    def hits(q: str) -> list[str]:
        return db.read_sync(lambda con: find_ids(con, ReviewQuery(q=q, q_in="all"),
                                                 limit=5)[0])

    assert hits(early) == [first]
    assert hits(f"{early[:7]}*") == [first]
    assert hits(late) == [first]
    assert hits(f"{late[:7]}*") == []
    # an edit of wide new text: still within the bound
    messages = [{"role": "user", "content": random_words(rng, MAX_FIELD_TERMS + 200)}]
    db.write_sync(lambda con: index_edit(con, first, messages))
    assert index_rows(db, first) <= ROW_BOUND + MAX_FIELD_TERMS + MAX_ROW_WORDS
    words = count(db, f"SELECT count(*) FROM search_words WHERE interaction_id = '{first}'")
    assert words == 2 * MAX_ROW_WORDS  # the logged text's, the edit's


def test_an_interactions_words_are_the_same_in_any_batch() -> None:
    """The words an interaction makes findable by a prefix (its first MAX_ROW_WORDS) do not
    depend on what it is indexed with; a word two of a batch share is listed once, with the
    first of them that has it among its first words."""
    rng = random.Random(5)
    many = random_words(rng, MAX_ROW_WORDS + 500).split()
    first = ("a", " ".join(many), "", "")
    second = ("b", " ".join([*many[-20:], "secondonly"]), "", "")

    def words_by_row(*rows: tuple[str, str, str, str]) -> dict[str, set[str]]:
        found = forward_index([r[0] for r in rows], [r[1:] for r in rows]).words.to_pylist()
        out: dict[str, set[str]] = {}
        for word in found:
            out.setdefault(word["interaction_id"], set()).add(word["word"])
        return out

    alone = words_by_row(first)["a"]
    assert alone == set(many[:MAX_ROW_WORDS])
    together = words_by_row(first, second)
    assert together["a"] == alone
    assert together["b"] == {*many[-20:], "secondonly"}  # past a's first words: b adds them
    assert words_by_row(second, first) == {"b": {*many[-20:], "secondonly"}, "a": alone}
