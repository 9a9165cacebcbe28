"""A time budget for one page of a text search (`q`), on both databases.

Some searches cost seconds a page whatever the plan (a word common overall but absent from the
newest rows, prefixes of many common words): any reviewer could tie up a database connection
with them. A page with a budget is answered within it or refused as a clear 400
(`search_too_broad`) asking for a narrower query.

- Postgres: each statement of the page runs under a `statement_timeout` of what is left of the
  budget (`PgConnection.statement_deadline`); the connection goes back to its pool without it.
- DuckDB: a timer interrupts the page's connection (the calling thread's own cursor: an
  interrupt stops only its statement) once the budget is spent, and again every
  `REINTERRUPT_S` in case it fell between two statements. A lock keeps the timer from touching
  the cursor once the page is over, so no later statement of the thread is interrupted.
  A page that ends past its budget without being interrupted (the timer fired between two
  statements, or too late to stop the last one) is refused too, as on Postgres.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import duckdb
import psycopg

from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from tuneloop.errors import SearchTooBroad

REINTERRUPT_S = 0.05


@contextlib.contextmanager
def page_budget(con: Connection, seconds: float | None) -> Iterator[None]:
    """The statements run on `con` meanwhile stopped once `seconds` are spent (None: no
    budget), as SearchTooBroad."""
    if seconds is None:
        yield
        return
    try:
        if isinstance(con, PgConnection):
            with con.statement_deadline(time.monotonic() + seconds):
                yield
        else:
            with _interrupted_after(con, seconds):
                yield
    except (psycopg.errors.QueryCanceled, duckdb.InterruptException) as exc:
        raise too_broad(seconds) from exc


def too_broad(budget_s: float) -> SearchTooBroad:
    """The refusal of a search past its budget: the budget as configured, to 3 digits (a
    walk of pages passes each page what is left, r12x2 LOW 5: "(1.99999 s)")."""
    return SearchTooBroad(
        f"this search could not fill a page in its time budget ({budget_s:.3g} s): its words "
        "match many older items and few recent ones; add a rarer word, type more of a "
        "prefix, or filter by date or model", param="q")


@contextlib.contextmanager
def _interrupted_after(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    state = {"open": True}
    timers: list[threading.Timer] = []

    def stop() -> None:
        with lock:
            if not state["open"]:
                return
            con.interrupt()
            again = threading.Timer(REINTERRUPT_S, stop)
            again.daemon = True
            timers.append(again)
            again.start()

    first = threading.Timer(seconds, stop)
    first.daemon = True
    timers.append(first)
    first.start()
    try:
        yield
        if time.monotonic() >= deadline:
            raise duckdb.InterruptException("the page ended past its time budget")
    finally:
        with lock:
            state["open"] = False
            for timer in timers:
                timer.cancel()
