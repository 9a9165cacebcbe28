"""Very wide rows (review r12x2 HIGH 1, LOW 7): each field of an interaction indexes its first
MAX_FIELD_TERMS distinct terms only, and the background indexer writes a batch of wide rows
in several transactions of at most WRITE_TERMS rows (postings and words) each, so no one
client request can hold Postgres's write lock, which ingest and admin writes wait for, for
long; search checks term lists of bounded length."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from storage.queue import ReviewQuery, find_ids
from storage.search_forward import MAX_FIELD_TERMS, MAX_ROW_WORDS
from storage.search_index import SearchIndexer
from storage.search_queue import WRITE_TERMS, BackgroundIndexer
from storage.store import Store
from tests.conftest import both_stores
from tests.test_search_languages import ids, item, load, opened
from tests.test_search_queue import count, ingest, migrated

# letters without vowels, s, l or y: Porter2 leaves such words as they are (one term each)
CONSONANTS = "bcdfghjkmnpqrtvwxz"


def words(n: int, length: int = 5, skip: int = 0) -> list[str]:
    """n distinct words, each its own term."""
    return ["".join(w) for w in itertools.islice(
        itertools.product(CONSONANTS, repeat=length), skip, skip + n)]


def found(con: Any, q: str, q_in: str = "conversation") -> list[str]:
    return find_ids(con, ReviewQuery(q=q, q_in=q_in), limit=50)[0]


@both_stores
def test_a_wide_field_is_searchable_by_its_first_terms_only(store: str) -> None:
    early = words(MAX_FIELD_TERMS - 1)  # after "qqqqearly": the first MAX_FIELD_TERMS
    late = words(100, skip=MAX_FIELD_TERMS - 1)
    user = " ".join(["qqqqearly", *early, *early[:50], "zzzzlate", *late])
    wide = item(0, user, "wideanswer noted")
    other = item(1, f"hello {late[10]} zzzzlate", "fine")
    with opened(store) as con:
        load(con, [wide, other])
        keys = con.execute("SELECT term_keys FROM search_docs WHERE interaction_id = ?",
                           [wide["id"]]).fetchall()[0][0]
        assert len(keys) <= MAX_FIELD_TERMS + 20  # the user's field capped; system, answer
        assert found(con, early[0]) == ids(0)
        assert found(con, early[-1]) == ids(0)  # the last of the first MAX_FIELD_TERMS
        assert found(con, f"{early[3]} {early[-2]}") == ids(0)
        assert found(con, "qqqqearly") == ids(0)
        assert found(con, "qqqqear*") == ids(0)
        # past the cap: not findable in the wide row (the other row still is)
        assert found(con, late[0]) == []
        assert found(con, late[10]) == ids(1)
        assert found(con, "zzzzlate") == ids(1)
        assert found(con, "zzzzla*") == ids(1)
        assert found(con, f"{early[0]} {late[0]}") == []
        # the other fields have caps of their own
        assert found(con, "wideanswer", "answers") == ids(0)


WIDE_ROWS, WIDE_WORDS = 8, MAX_FIELD_TERMS + 1000  # each row under the tail's TAIL_ROW_BYTES


def wide_rows() -> list[dict[str, Any]]:
    return [item(100 + k, " ".join(["widerow", *words(WIDE_WORDS, 6, skip=k * WIDE_WORDS)]),
                 "ok") for k in range(WIDE_ROWS)]


@pytest.fixture
def db(store: str) -> Iterator[Store]:
    with migrated(store) as opened_store:
        yield opened_store


@both_stores
def test_the_indexer_writes_wide_rows_in_bounded_transactions(db: Store) -> None:
    """On Postgres each write transaction holds the deployment's write lock: one of the
    indexer's stores at most WRITE_TERMS postings and words (before: a batch's all, here
    8 rows x 10,000 new words, in one)."""
    rows = wide_rows()
    assert ingest(db, rows) == len(rows)
    newest = words(WIDE_WORDS, 6, skip=(WIDE_ROWS - 1) * WIDE_WORDS)  # one key's newest row:
    first, past = newest[10], newest[MAX_FIELD_TERMS + 10]  # in its share of the tail

    def hits(q: str) -> list[str]:
        return db.read_sync(lambda con: find_ids(con, ReviewQuery(q=q), limit=50)[0])

    # the unindexed tail, tokenized at query time, has the same cap as the index
    assert (hits(first), hits(past)) == ([rows[-1]["id"]], [])

    def rows_of_index() -> int:
        return count(db, "SELECT (SELECT count(*) FROM search_terms) + "
                         "(SELECT count(*) FROM search_words)")

    totals = [rows_of_index()]  # after each write transaction, its own rows committed
    indexer = BackgroundIndexer(db, SearchIndexer(None),
                                on_written=lambda ids: totals.append(rows_of_index()))
    assert asyncio.run(indexer.index_pending()) == len(rows)
    written = [after - before for before, after in itertools.pairwise(totals)]
    assert count(db, "SELECT count(*) FROM search_pending") == 0
    # each row's first terms, and its first words
    assert sum(written) >= WIDE_ROWS * (MAX_FIELD_TERMS + MAX_ROW_WORDS)
    assert max(written) <= WRITE_TERMS, written
    assert len(written) > 1
    assert sorted(hits("widerow")) == sorted(r["id"] for r in rows)
    assert (hits(first), hits(past)) == ([rows[-1]["id"]], [])
