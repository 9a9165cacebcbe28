"""Migration 50: on Postgres, text search runs on a tsvector with a GIN index (nothing to do
on DuckDB, which keeps its postings).

`search_docs` gains `lexemes`, a tsvector generated from its own `term_keys` and
`term_fields` by `tuneloop_search_vector`: each term key (the analyzer's term, storage.
search_text, as 64-bit key) is a lexeme in hex, with a position per field it occurs in,
weighted by field (system A, user B, answer C; storage.search_pg asks with weight labels for
`q_in`). Being generated, it is right after every write of the row, an edit's merged keys
included, and for the rows already indexed (this ALTER fills it: the conversion is SQL, no
re-tokenizing). `search_docs_lexemes` indexes it (GIN), in place of `search_terms`, which is
dropped: one row per interaction written instead of one per term (~43 per chat row).
`search_words` stays: a prefix (`refu*`) is the words seen with it, as on DuckDB.
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection

VECTOR_FUNCTION = "tuneloop_search_vector"
FIELD_POSITIONS = ((1, "1A"), (2, "2B"), (4, "3C"))  # field bit, its position and weight


def positions(bits: int) -> str:
    """The positions (with weights) of a lexeme in the fields `bits`, as tsvector text."""
    return ":" + ",".join(label for bit, label in FIELD_POSITIONS if bits & bit)


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        return
    # indexed by the field bits (1-7): one array subscript a term, not a CASE per field
    # (a sixth less of the server's CPU per row written, bench/pg_index_write.py)
    by_bits = ", ".join(f"'{positions(bits)}'" for bits in range(1, 8))
    con.execute(f"""
        CREATE FUNCTION {VECTOR_FUNCTION}(keys bigint[], fields smallint[]) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT coalesce(string_agg(to_hex(k) || (ARRAY[{by_bits}])[f], ' '), '')::tsvector
            FROM unnest(keys, fields) AS t(k, f)
        $$""")
    con.execute("ALTER TABLE search_docs ADD COLUMN lexemes tsvector GENERATED ALWAYS AS "
                f"({VECTOR_FUNCTION}(term_keys, term_fields)) STORED")
    con.execute("CREATE INDEX search_docs_lexemes ON search_docs USING gin (lexemes)")
    con.execute("DROP TABLE search_terms")
    con.execute("ANALYZE search_docs")
