"""storage.transaction: commit together or not at all, and the error seen is the real one."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from storage.db import Connection, connect
from storage.transaction import transaction


@pytest.fixture
def con(tmp_path: Path) -> Connection:
    con = connect(tmp_path / "t.duckdb")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    return con


def ids(con: Connection) -> list[int]:
    return [r[0] for r in con.execute("SELECT id FROM t ORDER BY id").fetchall()]


def test_the_block_commits_together(con: Connection) -> None:
    with transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
        con.execute("INSERT INTO t VALUES (2)")
    assert ids(con) == [1, 2]
    with transaction(con):  # no transaction left open
        con.execute("INSERT INTO t VALUES (3)")
    assert ids(con) == [1, 2, 3]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_an_exception_rolls_back_and_is_raised(con: Connection, error: BaseException) -> None:
    with pytest.raises(type(error)), transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
        raise error
    assert ids(con) == []
    with transaction(con):  # the connection is usable, nothing left open
        con.execute("INSERT INTO t VALUES (2)")
    assert ids(con) == [2]


def test_a_failed_statement_rolls_back_what_came_before(con: Connection) -> None:
    with pytest.raises(duckdb.ConstraintException), transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
        con.execute("INSERT INTO t VALUES (1)")
    assert ids(con) == []


def test_a_failed_commit_raises_its_own_error(con: Connection) -> None:
    """DuckDB rolls back a failed COMMIT itself; a ROLLBACK after it fails with "no transaction
    is active", which a hand-written block raised instead of the commit's error."""
    other = con.cursor()
    mine = con.cursor()
    other.execute("BEGIN TRANSACTION")
    other.execute("INSERT INTO t VALUES (5)")
    with pytest.raises(duckdb.TransactionException, match="Failed to commit") as caught, \
            transaction(mine):
        mine.execute("INSERT INTO t VALUES (5)")
        other.execute("COMMIT")  # the same key wins first: our COMMIT fails
    assert "no transaction is active" in " ".join(caught.value.__notes__)
    assert ids(con) == [5]
    with transaction(mine):
        mine.execute("INSERT INTO t VALUES (6)")
    assert ids(con) == [5, 6]
