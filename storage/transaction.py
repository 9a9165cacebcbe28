"""One transaction helper for every multi-statement write in storage/.

    with transaction(con):
        ...  # statements that commit together, or not at all

BEGIN TRANSACTION, then COMMIT when the block ends normally; on any exception (KeyboardInterrupt
and cancellation included) ROLLBACK and re-raise it. The error the caller sees is always the
one that happened: when COMMIT itself fails (DuckDB rolls back by itself and a later ROLLBACK
would fail with "no transaction is active"), or ROLLBACK fails, that second failure is added to
the first as a note instead of replacing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from storage.db import Connection


@contextmanager
def transaction(con: Connection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException as exc:
        try:
            con.execute("ROLLBACK")
        except Exception as rollback_error:  # e.g. the failed COMMIT already rolled back
            exc.add_note(f"(ROLLBACK after it: {rollback_error})")
        raise
