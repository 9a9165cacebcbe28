"""Migration 50: on Postgres, text search runs on a tsvector with a GIN index (nothing to do
on DuckDB, which keeps its postings).

`search_docs` gains `lexemes`, a tsvector generated from its own `term_keys` and
`term_fields` by `tuneloop_search_vector`: each term (the analyzer's, storage.search_text, by
its 64-bit key in hex) is a lexeme per field it occurs in, the field a suffix: `s` system,
`u` user, `a` answer (storage.search_pg asks `q_in=conversation` as `(…u | …a)`). Fields as
lexemes, not as tsvector weights: the GIN index knows no weights, so a weighted query
rechecks every row the index gives, and a word of the system prompt every item shares would
have each search for it read every row. Being generated, the column is right after every
write of the row, an edit's merged keys included, and for the rows already indexed (this
ALTER fills it: the conversion is SQL, no re-tokenizing). `search_docs_lexemes` indexes it
(GIN), in place of `search_terms`, which is dropped: one row per interaction written instead
of one per term (~43 per chat row). `search_words` stays: a prefix (`refu*`) is the words
seen with it, as on DuckDB.
"""

from __future__ import annotations

from storage.backend.dialect import dialect_of
from storage.db import Connection

VECTOR_FUNCTION = "tuneloop_search_vector"
FIELD_SUFFIXES = ((1, "s"), (2, "u"), (4, "a"))  # field bit (storage.search_index), suffix


def apply(con: Connection) -> None:
    if dialect_of(con).name != "postgres":
        return
    bits = ", ".join(str(bit) for bit, _ in FIELD_SUFFIXES)
    suffixes = ", ".join(f"'{suffix}'" for _, suffix in FIELD_SUFFIXES)
    # array_to_tsvector: the lexemes as they are, no tsvector text to parse (a third less
    # of the server's CPU per row than building that text, bench/pg_index_write.py)
    con.execute(f"""
        CREATE FUNCTION {VECTOR_FUNCTION}(keys bigint[], fields smallint[]) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT array_to_tsvector(ARRAY(
                SELECT to_hex(k) || suffix FROM unnest(keys, fields) AS t(k, f),
                    unnest(ARRAY[{bits}], ARRAY[{suffixes}]) AS s(bit, suffix)
                WHERE f & bit <> 0))
        $$""")
    con.execute("ALTER TABLE search_docs ADD COLUMN lexemes tsvector GENERATED ALWAYS AS "
                f"({VECTOR_FUNCTION}(term_keys, term_fields)) STORED")
    con.execute("CREATE INDEX search_docs_lexemes ON search_docs USING gin (lexemes)")
    con.execute("DROP TABLE search_terms")
    con.execute("ANALYZE search_docs")
