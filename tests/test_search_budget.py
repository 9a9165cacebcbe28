"""A page of a text search (`q`) has a time budget (`search_page_budget_s`, storage.search_budget):
past it a clear 400 `search_too_broad`, and the connection goes back to its pool clean (no
statement_timeout left on Postgres, no interrupt pending on DuckDB). A lone surrogate in q is a
clear 400 on both stores (r12z LOW 5: UnicodeEncodeError before)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.progress import progress
from storage.queue import (
    ReviewQuery,
    budgeted_pages,
    find_ids,
    next_item,
    search_candidates,
)
from storage.search_budget import page_budget
from tests import test_search_languages
from tests.conftest import ADMIN_TOKEN, ProxyServer, both_stores
from tests.test_search_languages import ids
from tuneloop.errors import BadRequest, SearchTooBroad

con = test_search_languages.con  # the same module-scoped store of TEXTS, both stores
TINY_S = 1e-6  # spent before the first statement: deterministic, no timing race


def statement_timeout(con: Connection) -> str | None:
    if not isinstance(con, PgConnection):
        return None
    return str(con.execute("SHOW statement_timeout").fetchall()[0][0])


def test_a_page_past_its_budget_is_search_too_broad(con: Connection) -> None:
    with pytest.raises(SearchTooBroad, match="time budget") as caught:
        find_ids(con, ReviewQuery(q="refund", search_budget_s=TINY_S), limit=50)
    assert caught.value.code == "search_too_broad" and caught.value.status_code == 400
    assert statement_timeout(con) in (None, "0")
    # the same connection answers the next search, with or without a budget
    assert find_ids(con, ReviewQuery(q="refund", search_budget_s=30), limit=50)[0] \
        == ids(4, 5, 6, 9)
    assert statement_timeout(con) in (None, "0")
    assert find_ids(con, ReviewQuery(q="refund"), limit=50)[0] == ids(4, 5, 6, 9)


def test_progress_counts_are_not_refused_by_a_page_budget(con: Connection) -> None:
    """r12v HIGH 1: `queue/next` with `progress` passed its budgeted query on to the counts,
    which answered a 400 after the claim was made (the UI always asks for progress). MED 3:
    `queue/progress` had no budget at all (8 concurrent counts held readers 5-15 s). Past the
    budget the counts are those so far, `exact` false."""
    exact = progress(con, ReviewQuery(q="refund"), "ann")
    assert exact["exact"] and exact["total"] > 0
    assert progress(con, ReviewQuery(q="refund", search_budget_s=30), "ann") == exact
    cut = progress(con, ReviewQuery(q="refund", search_budget_s=TINY_S), "ann")
    assert cut["exact"] is False and cut["total"] <= exact["total"]  # the count so far


def test_queue_next_searches_on_a_reader_and_the_writer_only_claims(con: Connection) -> None:
    """r12v HIGH 2: `queue/next` ran its text search on the single writer, so one reviewer
    token's searches queued every save, claim and ingest batch behind them, a budget each.
    A reader finds the candidates; the writer claims one still unclaimed without searching
    (here any search on it is refused at once), and searches only when all were taken."""
    found = search_candidates(con, ReviewQuery(q="refund"), "ann")
    assert len(found) >= 2
    refused_here = ReviewQuery(q="refund", search_budget_s=TINY_S)
    try:
        ann = next_item(con, refused_here, "ann", 60, candidates=found)
        bob = next_item(con, refused_here, "bob", 60, candidates=found)  # ann holds the first
        assert ann is not None and bob is not None
        assert (ann.interaction_id, bob.interaction_id) == (found[0], found[1])
        with pytest.raises(SearchTooBroad):  # both taken meanwhile: the writer searches
            next_item(con, refused_here, "cy", 60, candidates=found[:2])
        assert next_item(con, refused_here, "dee", 60, candidates=[]) is None
    finally:
        con.execute("DELETE FROM review_claims")


def test_a_reviewers_own_claim_matching_the_search_is_kept(con: Connection) -> None:
    """r12u MED 4: with a search, a reviewer's own claim was released for the newest match
    unless it was that one (a reload handed her a new item); without a search it is kept."""
    query = ReviewQuery(q="refund")
    found = search_candidates(con, query, "ann")
    try:
        older = next_item(con, query, "ann", 60, candidates=[found[1]])
        assert older is not None and older.interaction_id == found[1]
        again = search_candidates(con, query, "ann")
        assert again[0] == found[1] and again.count(found[1]) == 1
        kept = next_item(con, query, "ann", 60, candidates=again)
        assert kept is not None and kept.interaction_id == found[1]
        assert search_candidates(con, query, "ann", skip=[found[1]])[0] == found[0]
    finally:
        con.execute("DELETE FROM review_claims")


def test_the_pages_of_one_queue_search_share_its_one_budget(con: Connection) -> None:
    """r12u HIGH 1: `queue/next` walks up to 50 pages past a long skip list, and each page had
    a budget of its own: one call held a reader for 50 budgets (48-70 s on Postgres)."""
    pages = budgeted_pages(con, ReviewQuery(q="refund", search_budget_s=0.5), 1)
    assert len(next(pages)) == 1
    time.sleep(0.6)
    with pytest.raises(SearchTooBroad):
        next(pages)
    assert len(list(budgeted_pages(con, ReviewQuery(q="refund"), 1))) >= 4  # no budget: all


@pytest.mark.parametrize("budget_s, shown", [(0.5, "(0.5 s)"), (0.3333333, "(0.333 s)")])
def test_a_queue_search_past_its_budget_tells_the_budget_configured(
        con: Connection, budget_s: float, shown: str) -> None:
    """r12x2 LOW 5: the message showed what was left for the last page ("1.99999 s")."""
    pages = budgeted_pages(con, ReviewQuery(q="refund", search_budget_s=budget_s), 1)
    next(pages)
    time.sleep(budget_s + 0.1)
    with pytest.raises(SearchTooBroad) as caught:
        next(pages)
    assert shown in str(caught.value), caught.value


def test_a_statement_past_the_budget_is_cancelled_and_the_timeout_reset(
        con: Connection) -> None:
    slow = ("SELECT pg_sleep(5)" if isinstance(con, PgConnection)
            else "SELECT count(*) FROM range(100000000000)")
    with pytest.raises(SearchTooBroad), page_budget(con, 0.3):
        con.execute(slow).fetchall()
    assert statement_timeout(con) in (None, "0")
    assert con.execute("SELECT 1").fetchall()[0][0] == 1


def test_a_cancel_inside_a_transaction_leaves_the_connection_clean(con: Connection) -> None:
    """After the rollback of a transaction whose search was stopped: no statement_timeout
    left (Postgres), no interrupt pending (DuckDB)."""
    slow = ("SELECT pg_sleep(5)" if isinstance(con, PgConnection)
            else "SELECT count(*) FROM range(100000000000)")
    con.execute("BEGIN")
    with pytest.raises(SearchTooBroad), page_budget(con, 0.3):
        con.execute(slow).fetchall()
    con.execute("ROLLBACK")
    assert statement_timeout(con) in (None, "0")
    after = ("SELECT count(*) FROM generate_series(1, 3000000)" if isinstance(con, PgConnection)
             else "SELECT count(*) FROM range(3000000)")
    assert con.execute(after).fetchall()[0][0] == 3_000_000
    if isinstance(con, PgConnection):  # without a budget a timeout is no search error
        with pytest.raises(psycopg.errors.QueryCanceled):
            con.execute("SET statement_timeout = 50").execute("SELECT pg_sleep(1)")
        con.execute("RESET statement_timeout")


@pytest.mark.parametrize("q", ["ref\ud800und", "\udfff", "refund \ud83d"])
def test_a_lone_surrogate_in_q_is_a_400(con: Connection, q: str) -> None:
    with pytest.raises(BadRequest, match="q is not valid text") as caught:
        find_ids(con, ReviewQuery(q=q), limit=50)
    assert caught.value.param == "q"


@both_stores
def test_the_review_list_answers_a_search_past_its_budget_as_a_400(
        proxy_factory: Callable[..., ProxyServer]) -> None:
    proxy = proxy_factory(search_page_budget_s=TINY_S)
    proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "where is my refund"}])
    proxy.wait_logged(1)
    with httpx.Client(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        for _ in range(3):  # every read connection of the pool, the same way
            refused = http.get(proxy.url + "/admin/interactions", params={"q": "refund"})
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "search_too_broad" and error["param"] == "q", error
            assert "narrow" in error["message"] or "rarer word" in error["message"]
            listed = http.get(proxy.url + "/admin/interactions")
            assert listed.status_code == 200 and len(listed.json()["items"]) == 1
        claimed = http.post(proxy.url + "/admin/queue/next",
                            json={"reviewer": "ann", "filter": {"q": "refund"}})
        assert claimed.status_code == 400
        assert claimed.json()["error"]["code"] == "search_too_broad"
        counts = http.get(proxy.url + "/admin/queue/progress",
                          params={"q": "refund", "reviewer": "ann"})
        assert counts.status_code == 200 and counts.json()["exact"] is False, counts.text



