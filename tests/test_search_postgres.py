"""Search on Postgres runs on its own machinery (migration 50): a tsvector per interaction with
a GIN index, and a plan of its own for newest-first pages (storage.search_pg); it finds what
DuckDB's postings find, CJK, prefixes, scopes and paging included (a store indexed before
migration 50: tests/test_search_upgrade)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.backend.dialect import table_exists
from storage.db import Connection
from storage.queue import ReviewQuery, find_ids
from storage.search import MAX_PREFIX_WORDS_POSTGRES, parse_query, scope_bits, term_keys
from storage.search_index import index_edit
from storage.search_pg import SPAN_GROWTH, VectorSearch
from storage.search_vectors import build_vectors, vectors_ready
from tests.test_search_languages import TEXTS, ids, item, load, opened
from tuneloop.errors import BadRequest

WORDS = ["refund", "refunded", "invoice", "parcel", "shipping", "password", "billing",
         "delivery", "order", "account", "パスワード", "密码", "비밀번호", "Straße"]
QUERIES = [("refund", "conversation"), ("refu*", "conversation"), ("refu*", "all"),
           ("refunds order", "conversation"), ("billing", "all"), ("billing", "conversation"),
           ("billing", "answers"), ("パスワード", "conversation"), ("ワード", "answers"),
           ("密码 order", "conversation"), ("strasse", "all"), ("parc* deliv*", "conversation"),
           ("zebra", "conversation"), ("hello", "conversation"), ("acme", "all"),
           ("alpha beta", "conversation"), ("alpha zebra", "conversation"),
           ("filler2*", "conversation"), ("filler3* zebra", "conversation"),
           ("filler12* alpha", "answers"), ("zebra filler4*", "all"), ("ancient", "conversation")]
N_ROWS = 6000


def corpus() -> list[dict[str, Any]]:
    """TEXTS, then N_ROWS rows of random words (fixed seed), each saying hello and alpha or
    beta; one in 500 with a rare word; the shared system prompt names refunds and billing; the
    answers end with one of 150 words `filler0`.. (a prefix of many words); the oldest 4,000
    say `ancient`."""
    pick = random.Random(12)
    rows = [item(k, user, answer) for k, (user, answer) in enumerate(TEXTS)]
    for k in range(len(TEXTS), len(TEXTS) + N_ROWS):
        user = " ".join(pick.sample(WORDS, 3)) + (" zebra" if k % 500 == 0 else "") \
            + (" alpha" if k % 2 else " beta")  # each in half the rows, never together
        old = " ancient" if k < 4000 else ""  # common, but not in the newest 2,000 rows
        rows.append(item(k, f"hello {user}{old}",
                         " ".join(pick.sample(WORDS, 2)) + f" filler{k % 150}"))
    return rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[tuple[Connection, Connection]]:
    """The corpus indexed in a DuckDB file and in a Postgres database (vacuumed, as
    autovacuum does), with an edited answer."""
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    edit = [{"role": "user", "content": "hello"},
            {"role": "assistant", "content": "a revised answer about unicorns"}]
    with opened(str(Path(tmp_path_factory.mktemp("d")) / "s.duckdb")) as duck, \
            opened(url) as pg:
        for con in (duck, pg):
            load(con, corpus())
            index_edit(con, ids(7)[0], edit)
        assert build_vectors(pg) == (True, "")  # as the indexer does (storage.search_vectors)
        pg.execute("VACUUM ANALYZE search_docs")  # as autovacuum would: the GIN merged
        yield duck, pg
    cluster.drop_database(url)


def every_page(con: Connection, q: str, q_in: str, limit: int) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        page, cursor = find_ids(con, ReviewQuery(q=q, q_in=q_in), limit=limit, cursor=cursor)
        found += page
        if cursor is None:
            return found


def vector_search(con: Connection, q: str, q_in: str = "conversation", *,
                  keys_from: Connection | None = None) -> VectorSearch:
    """`keys_from`: the store whose words give a prefix's keys (DuckDB: more words allowed)."""
    groups = list(dict.fromkeys(term_keys(keys_from or con, t) for t in parse_query(q)))
    return VectorSearch(con, groups, scope_bits(q_in))


def plan(con: Connection, sql_params: tuple[str, list[Any]]) -> str:
    sql, params = sql_params
    return "\n".join(r[0] for r in con.execute(f"EXPLAIN {sql}", params).fetchall())


def test_postgres_keeps_a_tsvector_with_a_gin_index_and_the_postings(
        stores: tuple[Connection, Connection]) -> None:
    """The postings stay for the replicas of before migration 50 (tests/test_search_upgrade)."""
    _, pg = stores
    assert table_exists(pg, "search_terms") and vectors_ready(pg)
    assert pg.execute("SELECT count(*) FROM search_docs WHERE lexemes <> ''::tsvector"
                      ).fetchall() == [(len(TEXTS) + N_ROWS,)]
    index = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname = "
                       "'search_docs_lexemes'").fetchall()
    assert index and "USING gin (lexemes)" in index[0][0]


def test_a_rare_term_reads_the_gin_and_a_common_one_the_key_newest_first(
        stores: tuple[Connection, Connection]) -> None:
    _, pg = stores
    rare = vector_search(pg, "zebra")
    assert rare.rare
    shape = plan(pg, rare.rare_sql(None, 50))
    assert "Bitmap Index Scan on search_docs_lexemes" in shape and "CTE" in shape
    common = vector_search(pg, "hello")
    assert not common.rare and common.estimate > common.rare_limit
    shape = plan(pg, common.window_sql(None, 256))
    assert "Index Scan Backward using search_docs_pkey" in shape and "Bitmap" not in shape


def test_a_query_estimated_common_that_is_sparse_after_all_reads_the_gin(
        stores: tuple[Connection, Connection]) -> None:
    """alpha and beta are each in half the rows, never together: the estimate (the planner's,
    terms taken as independent) says a quarter; the first full window finds none, and the
    search goes on with the rare shape instead of walking the whole key."""
    _, pg = stores
    search = vector_search(pg, "alpha beta")
    assert not search.rare
    assert search.candidates(pg, None, 1024) == ([], ids(len(TEXTS) + N_ROWS - 1024)[0])
    assert search.rare
    assert search.candidates(pg, ids(len(TEXTS) + N_ROWS - 1024)[0], 1024) == ([], None)


@pytest.mark.parametrize(("q", "q_in"), QUERIES)
def test_both_stores_find_the_same_items_on_every_page(
        stores: tuple[Connection, Connection], q: str, q_in: str) -> None:
    duck, pg = stores
    expected = every_page(duck, q, q_in, limit=1000)
    assert every_page(pg, q, q_in, limit=37) == expected
    assert every_page(pg, q, q_in, limit=1000) == expected


def test_the_expected_items_are_found_on_postgres(stores: tuple[Connection, Connection]) -> None:
    _, pg = stores
    assert every_page(pg, "zebra", "conversation", 100) == ids(*range(500, N_ROWS + 12, 500))
    assert every_page(pg, "unicorns", "answers", 100) == ids(7)  # the edited answer
    assert every_page(pg, "unicorns", "conversation", 100) == ids(7)
    assert every_page(pg, "acme", "conversation", 100) == []  # the system prompt only
    assert len(every_page(pg, "acme", "all", 9000)) == len(TEXTS) + N_ROWS
    assert len(every_page(pg, "hello", "conversation", 9000)) == N_ROWS + 2  # 11 and 7


def test_a_prefix_of_many_words_is_one_index_scan_a_word_not_one_tsquery(
        stores: tuple[Connection, Connection]) -> None:
    """r12z HIGH 1: the GIN checks each candidate against the whole tsquery, so a prefix of
    ~1,000 words as one OR cost ~2,000 steps per matching row (37 s a page at 300k rows)."""
    duck, pg = stores
    search = vector_search(pg, "filler* zebra", keys_from=duck)
    assert search.big and search.rare
    shape = plan(pg, search.rare_sql(None, 50))
    assert "ANY" in shape and "Bitmap Index Scan on search_docs_lexemes" in shape
    assert search.condition.count("|") == 1  # zebra in user | answer; filler* as ANY
    assert search.candidates(pg, None, 50) == (ids(*range(500, N_ROWS + 12, 500)), None)


def test_a_common_word_absent_from_the_newest_rows_does_not_read_every_match(
        stores: tuple[Connection, Connection]) -> None:
    """r12z HIGH 3: `ancient` is in 4,000 of 6,012 rows, none of the newest 2,000: the first
    window finds none, the rare shape reads rare_cap + 1 matches (not all 4,000), sees them
    many, and the search goes on by windows (by ranges where they are sparse)."""
    _, pg = stores
    search = vector_search(pg, "ancient")
    assert not search.rare and search.rare_cap < 4000
    newest = len(TEXTS) + N_ROWS - 1
    assert search.candidates(pg, None, 1024) == ([], ids(newest - 1023)[0])
    assert search.rare
    found, next_before = search.candidates(pg, ids(newest - 1023)[0], 1024)
    assert not search.rare and search.ranged
    assert found == ids(*range(newest - 2047, 4000)) and next_before == ids(newest - 2047)[0]
    found, _ = search.candidates(pg, next_before, 1024)
    assert found == ids(*range(newest - 3071, newest - 2047))


def test_a_query_taken_for_rare_that_is_not_goes_on_by_windows(
        stores: tuple[Connection, Connection]) -> None:
    """r12z MED 4: without statistics every estimate is small, and the rare shape read every
    match; it reads rare_cap + 1 at most, then windows."""
    _, pg = stores
    search = vector_search(pg, "hello")
    search.rare = True  # as an estimate without statistics makes it
    newest = len(TEXTS) + N_ROWS - 1
    found, next_before = search.candidates(pg, None, 100)
    assert not search.rare and search.ranged
    assert found == ids(*range(newest - 99, newest + 1)) and next_before == ids(newest - 99)[0]


def test_a_prefix_of_more_words_than_postgres_allows_is_a_400(
        stores: tuple[Connection, Connection]) -> None:
    """A prefix's words are one OR the GIN checks whole for each candidate: 111 words took 25 s
    a page at 300k rows (fill* 4.5 s, `fill* tok* ans*` 107 s); DuckDB allows more."""
    duck, pg = stores
    assert len(every_page(duck, "filler*", "conversation", 9000)) == N_ROWS  # 150 words
    with pytest.raises(BadRequest, match=f"more than {MAX_PREFIX_WORDS_POSTGRES} words"):
        find_ids(pg, ReviewQuery(q="filler*"), limit=50)


def test_a_search_past_its_time_budget_is_a_clear_400(
        stores: tuple[Connection, Connection]) -> None:
    """Each statement runs in what is left of the page's budget; past it, a 400 asking for a
    narrower query, and the connection keeps no statement_timeout."""
    _, pg = stores
    groups = [term_keys(pg, t) for t in parse_query("ancient")]
    search = VectorSearch(pg, groups, scope_bits("conversation"), budget_s=0.0)
    with pytest.raises(BadRequest, match="time budget") as raised:
        search.candidates(pg, None, 1024)
    assert raised.value.code == "search_too_broad"
    vector_search(pg, "ancient").candidates(pg, None, 1024)
    assert pg.execute("SHOW statement_timeout").fetchall() == [("0",)]


@pytest.mark.parametrize("q", ["ref\ud800und", "\udfff"])
def test_a_lone_surrogate_in_q_is_a_400_on_both_stores(
        stores: tuple[Connection, Connection], q: str) -> None:
    for con in stores:
        with pytest.raises(BadRequest, match="q is not valid text"):
            find_ids(con, ReviewQuery(q=q), limit=50)


def test_a_sparse_stretch_after_the_rare_shape_is_read_by_widening_ranges(
        stores: tuple[Connection, Connection]) -> None:
    """Past the rare shape's cap, a window finding few matches goes on by id ranges of the
    GIN's matches, each SPAN_GROWTH times wider than the last that came back short, not a
    window per `count` rows (r12z HIGH/MED 3 at 300k rows: 0.8 s a page)."""
    _, pg = stores
    search = vector_search(pg, "ancient")
    newest = len(TEXTS) + N_ROWS - 1
    search.ranged, search.in_range, search.span = True, True, 1024  # as after the rare cap
    assert search.candidates(pg, None, 512) == ([], ids(newest - 1024)[0])
    assert search.span == 1024 * SPAN_GROWTH
    # 8,192 rows hold more than rare_cap matches: asked again 8 times narrower
    low = newest - 1024 - 1025  # a range: `span` rows below `before`, and the row there
    assert search.candidates(pg, ids(newest - 1024)[0], 512) == (
        ids(*range(low, 4000)), ids(low)[0])
    assert search.in_range and search.rare_cap < 4000
    assert search.candidates(pg, ids(low)[0], 512) == (
        ids(*range(low - 512, low)), ids(low - 512)[0])
    assert not search.in_range  # a full one: windows again
    assert pg.execute("SHOW enable_indexscan").fetchall() == [("on",)]
