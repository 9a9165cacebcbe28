"""Search on Postgres (migration 51): a tsvector per interaction with a GIN index, asked for the
joint matches of a query of several terms (storage.search_pg), few of them the answer, many
left to the postings walk of the rarest term, as every single-term query and every query
while the GIN is not built yet; it finds what DuckDB's postings find on every path, CJK,
prefixes, scopes and paging included (a store indexed before migration 51:
tests/test_search_upgrade)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.backend.dialect import table_exists
from storage.db import Connection
from storage.queue import ReviewQuery, find_ids
from storage.search import (
    PostingsSearch,
    TermSearch,
    parse_query,
    scope_bits,
    term_keys,
)
from storage.search_budget import page_budget
from storage.search_index import index_edit
from storage.search_pg import JOINT_CAP, KnownMatches, joint_matches
from storage.search_vectors import build_vectors, vectors_ready
from tests.test_search_languages import TEXTS, ids, item, load, opened
from tuneloop.errors import BadRequest, SearchTooBroad

WORDS = ["refund", "refunded", "invoice", "parcel", "shipping", "password", "billing",
         "delivery", "order", "account", "パスワード", "密码", "비밀번호", "Straße"]
QUERIES = [("refund", "conversation"), ("refu*", "conversation"), ("refu*", "all"),
           ("refunds order", "conversation"), ("billing", "all"), ("billing", "conversation"),
           ("billing", "answers"), ("パスワード", "conversation"), ("ワード", "answers"),
           ("密码 order", "conversation"), ("strasse", "all"), ("parc* deliv*", "conversation"),
           ("zebra", "conversation"), ("hello", "conversation"), ("acme", "all"),
           ("alpha beta", "conversation"), ("alpha zebra", "conversation"),
           ("filler2*", "conversation"), ("filler3* zebra", "conversation"),
           ("filler12* alpha", "answers"), ("zebra filler4*", "all"), ("ancient", "conversation"),
           ("hello alpha", "conversation"), ("ancient beta", "conversation"),
           ("ancient zebra", "conversation"), ("refund ancient parcel", "all"),
           ("filler*", "conversation"), ("beta ancient filler*", "conversation"),
           ("beta ancient filler1*", "all")]
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
    with opened(str(Path(tmp_path_factory.mktemp("d")) / "s.duckdb")) as duck, \
            opened(url) as pg:
        for con in (duck, pg):
            load_corpus(con)
        assert build_vectors(pg) == (True, "")  # as the indexer does (storage.search_vectors)
        pg.execute("VACUUM ANALYZE search_docs")  # as autovacuum would: the GIN merged
        yield duck, pg
    cluster.drop_database(url)


@pytest.fixture(scope="module")
def unready(request: pytest.FixtureRequest) -> Iterator[Connection]:
    """The corpus in a Postgres database whose GIN is not built yet (the lexemes of the rows
    of before migration 51 still being filled, storage.search_vectors)."""
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    with opened(url) as pg:
        load_corpus(pg)
        pg.execute("UPDATE search_docs SET lexemes = NULL WHERE interaction_id < ?", [ids(99)[0]])
        yield pg
    cluster.drop_database(url)


def load_corpus(con: Connection) -> None:
    load(con, corpus())
    edit = [{"role": "user", "content": "hello"},
            {"role": "assistant", "content": "a revised answer about unicorns"}]
    index_edit(con, ids(7)[0], edit)


def every_page(con: Connection, q: str, q_in: str, limit: int) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        page, cursor = find_ids(con, ReviewQuery(q=q, q_in=q_in), limit=limit, cursor=cursor)
        found += page
        if cursor is None:
            return found


def groups_of(con: Connection, q: str, *, keys_from: Connection | None = None
              ) -> list[frozenset[int]]:
    """`keys_from`: the store whose words give a prefix's keys (DuckDB: more words allowed)."""
    return list(dict.fromkeys(term_keys(keys_from or con, t) for t in parse_query(q)))


def test_postgres_keeps_a_tsvector_with_a_gin_index_and_the_postings(
        stores: tuple[Connection, Connection]) -> None:
    """The postings stay for the replicas of before migration 51 (tests/test_search_upgrade)."""
    _, pg = stores
    assert table_exists(pg, "search_terms") and vectors_ready(pg)
    assert pg.execute("SELECT count(*) FROM search_docs WHERE lexemes <> ''::tsvector"
                      ).fetchall() == [(len(TEXTS) + N_ROWS,)]
    index = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname = "
                       "'search_docs_lexemes'").fetchall()
    assert index and "USING gin (lexemes)" in index[0][0]


@pytest.mark.parametrize(("q", "q_in"), QUERIES)
def test_both_stores_find_the_same_items_on_every_page(
        stores: tuple[Connection, Connection], q: str, q_in: str) -> None:
    duck, pg = stores
    expected = every_page(duck, q, q_in, limit=1000)
    assert every_page(pg, q, q_in, limit=37) == expected
    assert every_page(pg, q, q_in, limit=1000) == expected


@pytest.mark.parametrize(("q", "q_in"), QUERIES)
def test_without_the_gin_postgres_walks_the_postings_and_finds_the_same_items(
        stores: tuple[Connection, Connection], unready: Connection, q: str, q_in: str) -> None:
    duck, _ = stores
    assert not vectors_ready(unready)
    assert isinstance(TermSearch(unready, q, q_in).indexed, PostingsSearch)
    assert every_page(unready, q, q_in, limit=37) == every_page(duck, q, q_in, limit=1000)


def test_a_query_of_several_terms_sparse_in_the_postings_takes_the_gins_joint_matches(
        stores: tuple[Connection, Connection]) -> None:
    """`alpha beta`: each in half the rows, never together: the walk of alpha's postings
    (main's search) read all 3,000 of them and their terms; the first batch finds none, and
    the GIN answers there are none. `ancient beta` (ancient absent from the newest 2,000
    rows): the GIN's 1,994 matches, JOINT_CAP or fewer."""
    duck, pg = stores
    search = TermSearch(pg, "alpha beta")
    found, next_before = search.candidates(pg, None, 256)
    assert found == [] and next_before is not None
    assert isinstance(search.indexed, KnownMatches) and search.indexed.matches == []
    assert search.candidates(pg, next_before, 1024) == ([], None)
    search = TermSearch(pg, "ancient beta")
    found, next_before = search.candidates(pg, None, 256)
    assert found == [] and isinstance(search.indexed, KnownMatches)
    assert len(search.indexed.matches) == 1994 <= JOINT_CAP
    assert search.candidates(pg, next_before, 5) == (
        ids(*range(3990, 4000, 2)), ids(3990)[0])
    on_duckdb = TermSearch(duck, "alpha beta")
    on_duckdb.candidates(duck, None, 256)
    assert isinstance(on_duckdb.indexed, PostingsSearch)


def test_matches_dense_in_the_postings_or_many_are_left_to_the_walk(
        stores: tuple[Connection, Connection]) -> None:
    """`hello alpha`: every posting of alpha a match; `ancient beta` with a cap of 100: more
    matches than the cap, the walk goes on (and asks the GIN once); one term: its postings."""
    _, pg = stores
    dense = TermSearch(pg, "hello alpha")
    found, _ = dense.candidates(pg, None, 256)
    assert len(found) == 256 and isinstance(dense.indexed, PostingsSearch)
    many = TermSearch(pg, "ancient beta", joint_cap=100)
    found, next_before = many.candidates(pg, None, 256)
    assert found == [] and isinstance(many.indexed, PostingsSearch) and many.joint_asked
    walked, _ = many.candidates(pg, next_before, 4096)
    assert walked[:3] == ids(3998, 3996, 3994)
    one = TermSearch(pg, "ancient")
    one.candidates(pg, None, 256)
    assert isinstance(one.indexed, PostingsSearch) and one.joint_asked


def test_the_joint_matches_are_capped_and_leave_the_plan_settings_as_they_were(
        stores: tuple[Connection, Connection]) -> None:
    _, pg = stores
    bits = scope_bits("conversation")
    assert joint_matches(pg, groups_of(pg, "alpha beta"), bits) == []  # never together
    zebra_hello = groups_of(pg, "zebra hello")
    assert joint_matches(pg, zebra_hello, bits, cap=12) == ids(*range(500, N_ROWS + 12, 500))
    assert joint_matches(pg, zebra_hello, bits, cap=11) is None
    pg.execute("BEGIN")  # in a caller's transaction too
    assert joint_matches(pg, zebra_hello, bits, cap=11) is None
    assert pg.execute("SHOW enable_seqscan").fetchall() == [("on",)]
    pg.execute("COMMIT")
    assert pg.execute("SHOW enable_seqscan").fetchall() == [("on",)]
    assert pg.execute("SHOW enable_indexscan").fetchall() == [("on",)]


def test_a_page_past_its_budget_in_the_gin_leaves_the_connection_as_it_was(
        stores: tuple[Connection, Connection]) -> None:
    _, pg = stores
    with pytest.raises(SearchTooBroad):
        find_ids(pg, ReviewQuery(q="alpha beta", search_budget_s=1e-6), limit=50)
    assert pg.execute("SHOW enable_seqscan").fetchall() == [("on",)]
    assert pg.execute("SHOW statement_timeout").fetchall() == [("0",)]
    assert find_ids(pg, ReviewQuery(q="alpha beta", search_budget_s=5), limit=50) == ([], None)


@pytest.mark.parametrize("outer", [False, True], ids=["alone", "in_a_transaction"])
def test_a_budget_spent_inside_the_gins_read_is_search_too_broad_and_leaves_no_trace(
        stores: tuple[Connection, Connection], outer: bool) -> None:
    """The GIN's read itself cancelled by the page's statement_timeout (search_docs held by
    another transaction meanwhile): a 400, and its plan settings rolled back with it."""
    _, pg = stores
    holder = psycopg.connect(pg.raw.info.dsn, autocommit=True)
    try:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE search_docs IN ACCESS EXCLUSIVE MODE")
        if outer:
            pg.execute("BEGIN")
        with pytest.raises(SearchTooBroad), page_budget(pg, 0.3):
            joint_matches(pg, groups_of(pg, "zebra hello"), scope_bits("conversation"))
        if outer:
            pg.execute("ROLLBACK")  # the caller's, as its own error handling would
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert pg.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert pg.execute("SHOW enable_seqscan").fetchall() == [("on",)]
    assert pg.execute("SHOW enable_indexscan").fetchall() == [("on",)]
    assert pg.execute("SHOW statement_timeout").fetchall() == [("0",)]
    assert joint_matches(pg, groups_of(pg, "zebra hello"), scope_bits("conversation"),
                         cap=12) == ids(*range(500, N_ROWS + 12, 500))


def test_the_expected_items_are_found_on_postgres(stores: tuple[Connection, Connection]) -> None:
    _, pg = stores
    assert every_page(pg, "zebra", "conversation", 100) == ids(*range(500, N_ROWS + 12, 500))
    assert every_page(pg, "unicorns", "answers", 100) == ids(7)  # the edited answer
    assert every_page(pg, "unicorns", "conversation", 100) == ids(7)
    assert every_page(pg, "acme", "conversation", 100) == []  # the system prompt only
    assert len(every_page(pg, "acme", "all", 9000)) == len(TEXTS) + N_ROWS
    assert len(every_page(pg, "hello", "conversation", 9000)) == N_ROWS + 2  # 11 and 7


def test_a_prefix_of_many_words_is_left_out_of_the_gins_question_and_checked_after(
        stores: tuple[Connection, Connection]) -> None:
    """The GIN checks a candidate against a whole tsquery, and the planner may test `@@ ANY`
    row by row: 8 prefixes of hundreds of words took minutes at 300k rows."""
    duck, pg = stores
    search = TermSearch(pg, "beta ancient filler1*")
    assert search.asked == groups_of(pg, "beta ancient")
    search.candidates(pg, None, 256)
    assert isinstance(search.indexed, KnownMatches)
    with_prefix = set(every_page(duck, "filler1*", "conversation", 9000))
    assert search.indexed.matches == [
        i for i in every_page(duck, "beta ancient", "conversation", 9000) if i in with_prefix]
    prefixes = TermSearch(pg, "filler1* filler*")
    assert prefixes.asked == [] and prefixes.joint_asked
    prefixes.candidates(pg, None, 256)
    assert isinstance(prefixes.indexed, PostingsSearch)


@pytest.mark.parametrize("q", ["ref\ud800und", "\udfff"])
def test_a_lone_surrogate_in_q_is_a_400_on_both_stores(
        stores: tuple[Connection, Connection], q: str) -> None:
    for con in stores:
        with pytest.raises(BadRequest, match="q is not valid text"):
            find_ids(con, ReviewQuery(q=q), limit=50)


