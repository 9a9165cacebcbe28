"""Migration 49: the function `tuneloop sql` bounds each row with on Postgres (nothing on
DuckDB, where the query runs in the process anyway).

`storage.sql` wraps a read-only query as `SELECT * FROM (query) q(c0, c1, ...) WHERE
tuneloop_sql_row_fits(octet_length(c0::text) + ..., cap)`: the server measures each row
before sending it and ends the query with SQLSTATE `TL413` at the first row over the cap, so
no such row crosses the socket (a `SELECT repeat('x', 700000000)` used to be fetched whole
into the replica, 1.7 GB, before the answer was refused). Executable by PUBLIC, as every
function is by default: the read-only `sql_db` role calls it too.
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection

ROW_TOO_LARGE = "TL413"  # the SQLSTATE it raises (class TL: tuneloop's own)


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        return
    con.execute(f"""
        CREATE FUNCTION tuneloop_sql_row_fits(size bigint, cap bigint) RETURNS boolean
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        BEGIN
            IF size > cap THEN
                RAISE EXCEPTION 'a row of % bytes is over the cap of % bytes', size, cap
                    USING ERRCODE = '{ROW_TOO_LARGE}';
            END IF;
            RETURN true;
        END
        $$""")
