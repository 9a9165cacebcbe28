"""What a read-only query may do, decided on DuckDB's own parse tree (an allowlist, not regexes).

`tuneloop sql` is a reviewer's tool: one SELECT (or WITH ... SELECT, VALUES, DESCRIBE, SUMMARIZE,
SHOW TABLES) over tuneloop's tables. The statement is parsed by DuckDB (`extract_statements`,
then `json_serialize_sql` for the tree) and every function call, window function, table function
and table reference in it must be on the lists below. Anything else is refused before it runs:
`nextval` (advances a sequence), `checkpoint`, `duckdb_settings()` and the other `duckdb_*`
functions (file paths, settings), `pragma_*`, `read_*`, `glob`, `query(...)`, `getenv`,
`current_setting`, `json_execute_serialized_sql`, files named as tables ...

A table name must be one of tuneloop's tables or a CTE *in scope* where it is used (a CTE is
visible in its WITH's query, in the later CTEs of that WITH and, when recursive, in itself):
`FROM pg_settings, (WITH pg_settings AS (...) ...)` read DuckDB's own view. On top of that no
CTE may take the name of a DuckDB catalog object (`pg_*`, `duckdb_*`, `pragma_*`, `sqlite_*`,
any view or table function), and those names are refused as tables whatever the scope.

Functions that build a value much larger than their arguments (`repeat`, `lpad`, `rpad`) need
constant arguments with a small result: one such call is a single vector operation that
neither the time limit (an interrupt lands between vectors) nor DuckDB's memory limit (string
data is not counted) can stop. Queries nested too deeply are refused as `sql_too_complex`.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson

from tuneloop.errors import BadRequest, Forbidden

OPERATORS = frozenset({
    "+", "-", "*", "/", "//", "%", "**", "^", "=", "==", "!=", "<>", "<", ">", "<=", ">=", "||",
    "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~", "->", "->>", "@>", "<@", "&&", "&", "|", "<<",
    ">>", "~", "!", "@", "^@",
})

AGGREGATES = frozenset({
    "count", "count_star", "count_if", "countif", "sum", "avg", "mean", "min", "max",
    "any_value", "arg_max", "arg_min", "argmax", "argmin", "max_by", "min_by", "first", "last",
    "list", "array_agg", "string_agg", "group_concat", "listagg", "median", "mode", "quantile",
    "quantile_cont", "quantile_disc", "approx_quantile", "approx_count_distinct", "stddev",
    "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "bool_and", "bool_or",
    "every", "bit_and", "bit_or", "bit_xor", "histogram", "product", "corr", "covar_pop",
    "covar_samp", "entropy", "kurtosis", "skewness", "fsum", "favg", "json_group_array",
    "json_group_object",
})

WINDOWS = frozenset({
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
})

STRINGS = frozenset({
    "lower", "upper", "lcase", "ucase", "length", "len", "strlen", "char_length",
    "character_length", "octet_length", "substr", "substring", "left", "right", "trim", "ltrim",
    "rtrim", "replace", "concat", "concat_ws", "contains", "starts_with", "ends_with", "prefix",
    "suffix", "position", "strpos", "instr", "split_part", "string_split", "str_split", "split",
    "string_split_regex", "regexp_matches", "regexp_replace", "regexp_extract",
    "regexp_extract_all", "regexp_full_match", "regexp_split_to_array", "reverse", "repeat",
    "lpad", "rpad", "md5", "sha256", "hash", "ascii", "chr", "unicode",
    "strip_accents", "nfc_normalize", "levenshtein", "jaro_winkler_similarity", "jaccard",
    "damerau_levenshtein", "hamming", "translate", "string_to_array", "array_to_string",
    "to_base64", "from_base64", "base64", "hex", "unhex", "ord", "like_escape", "ilike_escape",
})

DATES = frozenset({
    "now", "current_date", "current_time", "current_timestamp", "get_current_timestamp",
    "today", "transaction_timestamp", "date_part", "datepart", "date_trunc", "datetrunc",
    "date_diff", "datediff", "date_sub", "datesub", "date_add", "strftime", "strptime",
    "try_strptime", "to_timestamp", "epoch", "epoch_ms", "epoch_us", "epoch_ns", "make_date",
    "make_timestamp", "make_time", "age", "year", "month", "day", "hour", "minute", "second",
    "millisecond", "microsecond", "week", "weekday", "dayofweek", "dayofyear", "dayofmonth",
    "isodow", "isoyear", "yearweek", "quarter", "last_day", "monthname", "dayname",
    "time_bucket", "to_days", "to_hours", "to_minutes", "to_seconds", "to_milliseconds",
    "to_microseconds", "to_months", "to_years", "to_weeks", "timezone", "century", "decade",
})

JSON = frozenset({
    "json", "json_extract", "json_extract_string", "json_extract_path",
    "json_extract_path_text", "json_value", "json_exists", "json_keys", "json_type",
    "json_valid", "json_array_length", "json_contains", "json_structure", "json_transform",
    "json_transform_strict", "from_json", "from_json_strict", "to_json", "json_object",
    "json_array", "json_quote", "array_to_json", "row_to_json", "json_merge_patch",
    "json_pretty",
})

NESTED = frozenset({
    "list_value", "list_pack", "array_value", "list_extract", "array_extract", "list_element",
    "list_slice", "array_slice", "list_contains", "list_has", "array_contains", "array_has",
    "list_position", "list_indexof", "array_position", "array_length", "list_sort",
    "array_sort", "list_reverse_sort", "list_distinct", "array_distinct", "list_unique",
    "list_filter", "array_filter", "filter", "list_transform", "array_transform", "apply",
    "list_apply", "list_reduce", "reduce", "list_aggregate", "list_aggr", "array_aggregate",
    "list_concat", "list_cat", "array_concat", "array_cat", "flatten", "list_zip",
    "list_has_any", "list_has_all", "list_intersect", "unnest", "struct_pack", "row",
    "struct_extract", "struct_insert", "map", "map_from_entries", "map_extract", "element_at",
    "map_keys", "map_values", "map_entries", "cardinality", "list_min", "list_max",
    "list_count", "list_avg", "list_sum", "list_first", "list_last", "list_string_agg",
    "list_select", "list_where", "list_grade_up",
})

MATH_AND_MISC = frozenset({
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "exp", "ln", "log",
    "log2", "log10", "pow", "power", "mod", "sign", "greatest", "least", "pi", "random",
    "gen_random_uuid", "uuid", "isnan", "isinf", "isfinite", "degrees", "radians", "sin",
    "cos", "tan", "asin", "acos", "atan", "atan2", "bit_count", "gcd", "lcm", "factorial",
    "even", "xor", "round_even", "ifnull", "nullif", "if", "iff", "typeof", "alias",
})

SCALARS = OPERATORS | AGGREGATES | WINDOWS | STRINGS | DATES | JSON | NESTED | MATH_AND_MISC

TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

# expression classes of DuckDB's serialized tree a read may contain
EXPRESSIONS = frozenset({
    "CONSTANT", "COLUMN_REF", "FUNCTION", "WINDOW", "OPERATOR", "COMPARISON", "CONJUNCTION",
    "CASE", "CAST", "BETWEEN", "SUBQUERY", "STAR", "LAMBDA", "LAMBDA_REF",
    "POSITIONAL_REFERENCE", "COLLATE", "TYPE",
})

# FROM-clause items a read may contain
TABLE_REFS = frozenset({
    "BASE_TABLE", "TABLE_FUNCTION", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT",
    "SHOW_REF",
})

# information_schema views a reader may use (no file paths in them)
INFORMATION_SCHEMA = frozenset({"tables", "columns"})
SHOWABLE = frozenset({"", '"tables"'})

# names of DuckDB's own catalog objects: never a table here, never a CTE's name
SYSTEM_PREFIXES = ("duckdb_", "pragma_", "pg_", "sqlite_", "information_schema")
# tables no query may read: `forgotten_users` holds a hash of each forgotten user's name,
# which a guess hashed the same way would confirm
HIDDEN_TABLES = frozenset({"forgotten_users"})
# a value built by one call stays below this many characters (repeat, lpad, rpad)
MAX_BUILT_CHARS = 100_000
MAX_SQL_CHARS = 100_000
MAX_BRACKET_DEPTH = 100
MAX_TREE_DEPTH = 400


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one SELECT whose every call and table is on the allowlists."""
    _check_size(sql)
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        if "depth" in str(exc).lower():
            raise _too_complex() from exc
        raise BadRequest(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise BadRequest(f"send exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise Forbidden(f"only SELECT is allowed here, not {kind.name}", code="read_only")
    tree = parse_tree(con, sql)
    tables = frozenset(name.lower() for (name,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database()"
    ).fetchall()) - HIDDEN_TABLES
    system = frozenset(name.lower() for (name,) in con.execute(
        "SELECT view_name FROM duckdb_views() UNION SELECT table_name FROM duckdb_tables() "
        "UNION SELECT function_name FROM duckdb_functions() WHERE function_type = 'table'"
    ).fetchall()) - tables | HIDDEN_TABLES
    try:
        _Checker(tables, system).walk(tree, frozenset())
    except RecursionError as exc:
        raise _too_complex() from exc


def _too_complex() -> BadRequest:
    return BadRequest(f"the query is too complex: nested more than {MAX_BRACKET_DEPTH} brackets "
                      f"or {MAX_TREE_DEPTH} levels deep, or longer than {MAX_SQL_CHARS} "
                      "characters; simplify it (a CTE per step)", code="sql_too_complex")


def _check_size(sql: str) -> None:
    """Bound the text before DuckDB parses it (a deep tree breaks the parse and its JSON)."""
    if len(sql) > MAX_SQL_CHARS:
        raise _too_complex()
    depth = 0
    quote = ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                raise _too_complex()
        elif char in ")]}":
            depth -= 1


def _tree_depth(tree: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_TREE_DEPTH:
            return depth
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return deepest


def parse_tree(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    (text,) = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone() or ("",)
    try:
        tree: dict[str, Any] = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # nested past orjson's depth
        raise _too_complex() from exc
    if _tree_depth(tree) > MAX_TREE_DEPTH:
        raise _too_complex()
    if tree.get("error"):
        raise Forbidden(f"not allowed in a read: {tree.get('error_message', 'unknown')}",
                        code="read_only")
    return tree


def _refuse(what: str) -> Forbidden:
    return Forbidden(f"{what} is not allowed in a read-only query (tuneloop sql allows "
                     "SELECT over tuneloop's tables with ordinary functions)", code="read_only")


class _Checker:
    """Walks the tree with the CTE names in scope at each point."""

    def __init__(self, tables: frozenset[str], system: frozenset[str]) -> None:
        self.tables = tables
        self.system = system

    def walk(self, node: Any, ctes: frozenset[str]) -> None:
        if isinstance(node, list):
            for value in node:
                self.walk(value, ctes)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("cte_map"), dict):
            ctes = self._with(node["cte_map"], ctes)
            node = {key: value for key, value in node.items() if key != "cte_map"}
        if "class" in node:
            _check_expression(node)
        elif "sample" in node and not str(node.get("type", "")).endswith("_NODE"):
            self._table_ref(node, ctes)
            children = [value for key, value in node.items() if key != "function"]
            if node.get("type") == "TABLE_FUNCTION":
                children.append((node.get("function") or {}).get("arguments", []))
            self.walk(children, ctes)
            return
        for value in node.values():
            self.walk(value, ctes)

    def _with(self, cte_map: dict[str, Any], ctes: frozenset[str]) -> frozenset[str]:
        """Check each CTE in the scope it sees; the names all of them add for the query."""
        for entry in cte_map.get("map") or []:
            name = str(entry.get("key", "")).lower()
            if _is_system(name) or name in self.system:
                raise _refuse(f"a CTE named {name!r} (the name of a DuckDB catalog object)")
            body = entry.get("value") or {}
            query = body.get("query_node") or {}
            recursive = (query.get("type") == "RECURSIVE_CTE_NODE"
                         and str(query.get("cte_name", "")).lower() == name)
            self.walk(body, ctes | {name} if recursive else ctes)
            ctes = ctes | {name}
        return ctes

    def _table_ref(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        kind = node.get("type")
        if kind not in TABLE_REFS:
            raise _refuse(f"table reference {str(kind).lower()}")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if function.get("schema") or function.get("catalog") or name not in TABLE_FUNCTIONS:
                raise _refuse(f"table function {name}()")
        elif kind == "BASE_TABLE":
            self._base_table(node, ctes)
        elif kind == "SHOW_REF" and str(node.get("table_name", "")) not in SHOWABLE:
            raise _refuse(f"SHOW {node.get('table_name')}")

    def _base_table(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        name = str(node.get("table_name", "")).lower()
        schema = str(node.get("schema_name", "")).lower()
        path = (node.get("qualified_name") or {}).get("path") or [name]
        if node.get("catalog_name") or len(path) > 2:
            raise _refuse(f"table {'.'.join(map(str, path))}")
        if schema == "information_schema":
            if name not in INFORMATION_SCHEMA:
                raise _refuse(f"table information_schema.{name}")
            return
        if _is_system(name) or name in self.system:
            raise _refuse(f"table {name!r}")
        if schema == "main" and name in self.tables:
            return  # a qualified name is never a CTE
        if schema == "" and name in self.tables | ctes:
            return
        raise _refuse(f"table {name!r}" if not schema else f"table {schema}.{name}")


def _is_system(name: str) -> bool:
    return name.startswith(SYSTEM_PREFIXES)


def _check_expression(node: dict[str, Any]) -> None:
    kind = node["class"]
    if kind not in EXPRESSIONS:
        raise _refuse(f"expression {str(kind).lower()}")
    if kind in ("FUNCTION", "WINDOW"):
        name = str(node.get("function_name", "")).lower()
        if node.get("schema") or node.get("catalog"):
            raise _refuse(f"a qualified function ({node.get('schema')}.{name})")
        if name not in SCALARS:
            raise _refuse(f"function {name}()")
        if name in AMPLIFIERS:
            _check_amplifier(name, [a.get("expression") or {} for a in node.get("arguments") or []])


AMPLIFIERS = frozenset({"repeat", "lpad", "rpad"})


def _literal(node: dict[str, Any]) -> tuple[str, str] | None:
    if node.get("class") != "CONSTANT":
        return None
    literal = node.get("literal") or {}
    return str(literal.get("kind", "")), str(literal.get("text", ""))


def _count(node: dict[str, Any]) -> int | None:
    literal = _literal(node)
    if literal is None or literal[0] != "INTEGER":
        return None
    try:
        return int(literal[1])
    except ValueError:
        return None


def _check_amplifier(name: str, arguments: list[dict[str, Any]]) -> None:
    """repeat(text, n) with both constant; lpad/rpad(x, n[, fill]) with a constant n."""
    count = _count(arguments[1]) if len(arguments) > 1 else None
    if name == "repeat":
        text = _literal(arguments[0]) if arguments else None
        size = len(text[1]) if text and text[0] == "STRING" else None
        if size is None or count is None or size * max(count, 0) > MAX_BUILT_CHARS:
            raise _refuse(f"repeat() other than of a constant string a constant number of "
                          f"times, up to {MAX_BUILT_CHARS} characters,")
    elif count is None or count > MAX_BUILT_CHARS:
        raise _refuse(f"{name}() other than to a constant width up to {MAX_BUILT_CHARS},")
