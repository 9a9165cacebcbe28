"""The SQL that DuckDB and Postgres spell differently, one named method per difference.

Storage queries are written once in the SQL both speak; where they can't be (JSON paths and
types, catalog lookups, time arithmetic), they ask the connection's dialect for the fragment.
Paths are tuples of keys and indexes; index -1 is the last element of an array.
"""

from __future__ import annotations

from typing import Any

Path = tuple[str | int, ...]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDialect:
    name = "duckdb"
    # rows have storage positions (`rowid`), in insertion order
    row_positions = True
    # a since/until list walks ids within the range's id bounds (storage/time_bounds.py);
    # DuckDB skips row groups by their min/max created_at instead
    bounds_time_by_id = False
    # the Stats page counts from the covering indexes of migration 52 (storage/stats.py);
    # DuckDB reads the columns it names alone anyway
    stats_index = False

    def _path(self, path: Path) -> str:
        out = "$"
        for step in path:
            if isinstance(step, int):
                out += f"[#{step}]" if step < 0 else f"[{step}]"
            else:
                out += "." + step
        return _quote(out)

    def json_at(self, expr: str, path: Path) -> str:
        """The JSON value at `path` (NULL when missing)."""
        return f"json_extract({expr}, {self._path(path)})"

    def json_text_at(self, expr: str, path: Path) -> str:
        """The value at `path` as text (a JSON string unquoted), NULL when missing."""
        return f"json_extract_string({expr}, {self._path(path)})"

    def json_is_string(self, expr: str) -> str:
        return f"(json_type({expr}) = 'VARCHAR')"

    def json_is_array(self, expr: str) -> str:
        return f"(json_type({expr}) = 'ARRAY')"

    def json_is_object(self, expr: str) -> str:
        return f"(json_type({expr}) = 'OBJECT')"

    def json_string_value(self, expr: str) -> str:
        """A JSON string value as text."""
        return f"({expr} ->> '$')"

    def json_length(self, expr: str) -> str:
        """The length of a JSON array; 0 for anything else or NULL."""
        return f"coalesce(json_array_length({expr}), 0)"

    def matches(self, expr: str, pattern: str) -> str:
        return f"regexp_matches({expr}, {_quote(pattern)})"

    def epoch_seconds(self, expr: str) -> str:
        return f"epoch({expr})"

    def epoch_us(self, expr: str) -> str:
        """Microseconds since 1970 as BIGINT."""
        return f"epoch_us({expr})"

    def int_div(self, left: str, right: str) -> str:
        """Integer division of two integers (DuckDB's `/` would give a DOUBLE)."""
        return f"({left} // {right})"

    def epoch_day(self, expr: str) -> str:
        """The day number of a TIMESTAMPTZ: its microseconds since 1970 divided by a day's,
        as the integer division gives it (so before 1970, toward zero)."""
        return self.int_div(self.epoch_us(expr), "86400000000")

    def log2(self, expr: str) -> str:
        """The base-2 logarithm of a positive number, as DOUBLE (exact at powers of 2)."""
        return f"log2({expr})"

    def list_length(self, expr: str) -> str:
        """The number of elements of a list (array) column; NULL for NULL."""
        return f"len({expr})"

    unescapes_nul_badly = False
    """Postgres refuses to turn a JSON string with an escaped NUL (`\\u0000`) into text."""

    def has_escaped_nul(self, expr: str) -> str:
        """The JSON text of `expr` holds `\\u0000` (perhaps inside `\\\\u0000`: a false
        positive costs only the Python path)."""
        return f"coalesce(strpos(CAST({expr} AS VARCHAR), '\\u0000') > 0, FALSE)"

    def table_exists_sql(self) -> str:
        return ("SELECT 1 FROM duckdb_tables() WHERE schema_name = 'main' "
                "AND table_name = ?")

    def try_integer(self, expr: str) -> str:
        """Text as an INTEGER, NULL when it is not one (instead of an error)."""
        return f"TRY_CAST({expr} AS INTEGER)"

    def changed_rows(self, con: Any) -> int:
        """The rows the statement just run on `con` (an UPDATE or DELETE) changed: DuckDB
        answers them as a one-row result, Postgres as the command's row count."""
        rows = con.fetchall()
        return int(rows[0][0]) if rows else 0

    def prefix_match(self, expr: str, prefix: str) -> tuple[str, list[Any]]:
        """`expr` starts with `prefix` (text search's `refu*`), as SQL and its parameter."""
        return f"starts_with({expr}, ?)", [prefix]


class PgDialect(DuckDialect):
    name = "postgres"
    unescapes_nul_badly = True
    row_positions = False
    bounds_time_by_id = True
    stats_index = True

    def _steps(self, path: Path) -> str:
        return "".join(f"->{step}" if isinstance(step, int) else f"->{_quote(step)}"
                       for step in path)

    def _extract_args(self, path: Path) -> str | None:
        """The path as json_extract_path arguments: one pass over the JSON text, where each
        `->` step parses the text again (3x faster on a 2 KB chat response). None when a
        step counts from the end (-1), which only `->` does."""
        if any(isinstance(step, int) and step < 0 for step in path):
            return None
        return ", ".join(_quote(str(step)) for step in path)

    def json_at(self, expr: str, path: Path) -> str:
        args = self._extract_args(path)
        if args is not None and len(path) > 1:
            return f"json_extract_path({expr}, {args})"
        return f"(({expr}){self._steps(path)})"

    def json_text_at(self, expr: str, path: Path) -> str:
        args = self._extract_args(path)
        if args is not None and len(path) > 1:
            return f"json_extract_path_text({expr}, {args})"
        *head, last = path
        arrow = f"->>{last}" if isinstance(last, int) else f"->>{_quote(last)}"
        return f"(({expr}){self._steps(tuple(head))}{arrow})"

    def json_is_string(self, expr: str) -> str:
        return f"(json_typeof({expr}) = 'string')"

    def json_is_array(self, expr: str) -> str:
        return f"(json_typeof({expr}) = 'array')"

    def json_is_object(self, expr: str) -> str:
        return f"(json_typeof({expr}) = 'object')"

    def json_string_value(self, expr: str) -> str:
        return f"(({expr}) #>> '{{}}')"

    def json_length(self, expr: str) -> str:
        # json_array_length raises on a non-array in Postgres: ask only arrays
        return (f"(CASE WHEN json_typeof({expr}) = 'array' THEN json_array_length({expr}) "
                "ELSE 0 END)")

    def matches(self, expr: str, pattern: str) -> str:
        return f"({expr} ~ {_quote(pattern)})"

    def epoch_seconds(self, expr: str) -> str:
        return f"extract(epoch FROM {expr})"

    def epoch_us(self, expr: str) -> str:
        return f"(extract(epoch FROM {expr}) * 1000000)::BIGINT"

    def int_div(self, left: str, right: str) -> str:
        return f"({left} / {right})"

    def epoch_day(self, expr: str) -> str:
        # the same number; from 1970 on, by the UTC date, ~25% less of the stats page's time
        # at 1M rows than through `extract`, which computes in NUMERIC
        return (f"CASE WHEN {expr} >= TIMESTAMPTZ '1970-01-01 00:00:00+00' "
                f"THEN ({expr} AT TIME ZONE 'UTC')::DATE - DATE '1970-01-01' "
                f"ELSE {super().epoch_day(expr)} END")

    def log2(self, expr: str) -> str:
        # in DOUBLE: log(2.0, x::NUMERIC) computes to NUMERIC's precision, 17 s for the token
        # histogram of 1M rows (bench/review_queries.py); exact at powers of 2 up to 2**62, its
        # floor right just below them up to 2**40 (tests/test_dialect_log2.py)
        return f"(ln(({expr})::DOUBLE PRECISION) / ln(2.0::DOUBLE PRECISION))"

    def list_length(self, expr: str) -> str:
        return f"cardinality({expr})"

    def table_exists_sql(self) -> str:
        return "SELECT 1 WHERE to_regclass(?) IS NOT NULL"

    def try_integer(self, expr: str) -> str:
        return (f"(CASE WHEN ({expr}) ~ '^\\s*[-+]?[0-9]{{1,9}}\\s*$' "
                f"THEN CAST(({expr}) AS INTEGER) END)")

    def changed_rows(self, con: Any) -> int:
        return max(int(con.rowcount), 0)

    def prefix_match(self, expr: str, prefix: str) -> tuple[str, list[Any]]:
        # LIKE with a constant prefix uses a text_pattern_ops btree (migration 39);
        # starts_with() would read every row
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"{expr} LIKE ? ESCAPE '\\'", [escaped + "%"]


DUCKDB = DuckDialect()
POSTGRES = PgDialect()


def dialect_of(con: Any) -> DuckDialect:
    return POSTGRES if getattr(con, "dialect", None) == "postgres" else DUCKDB


def table_exists(con: Any, table: str) -> bool:
    return bool(con.execute(dialect_of(con).table_exists_sql(), [table]).fetchall())
