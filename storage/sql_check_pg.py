"""What a read-only query may not call on Postgres, whatever role it runs as.

Postgres itself refuses writes in the READ ONLY transaction `tuneloop sql` runs in (and, with
the `sql_db` setting, the role's missing rights refuse them again). A read-only transaction
still lets the store's own role signal its other sessions (`pg_terminate_backend` on every
replica's connections), take the advisory locks every replica's writes wait on, and run SQL
text built at run time (`query_to_xml('...')`, `ts_stat`); and it lets a role with more
rights (a superuser, REPLICATION, pg_read_server_files: `serve` refuses /admin/sql for those,
storage/sql_role.py) read the server's files, create a replication slot that outlives the
rollback (WAL then piles up until the disk fills), switch WAL or reset statistics. So these
names are refused before the query reaches the database, wherever they appear, as are
Unicode-escaped names (`U&"..."`) that could spell them in disguise. So are the tables no
reviewer may read (`storage.sql_check.HIDDEN_TABLES`), the planner's column samples
(`pg_stats`), the functions that read a table named at run time (`table_to_xml`), and
`set_config` (a raised `work_mem` lets one sort or hash hold that much memory). The
check is a name match over the text: a string that merely contains such a name is refused too.

As on DuckDB (storage/sql_check.py `MAX_BUILT_CHARS`), a function that builds a value much larger
than its arguments needs constant arguments with a small result: `repeat('-', 40)`,
`lpad(x, 8, '0')`, `format('%-12s', x)`, never `repeat('x', 200000000)` or a width taken from a
column. Postgres has no memory limit per query (one such value may be up to 1 GB, and
`string_agg` over a few thousand of them builds that much again). Aggregates stay allowed
(`string_agg(tag, ',') ... GROUP BY`): they build from stored rows, row by row, under the
statement timeout, and no value may pass Postgres's own 1 GB. `array_fill` (any size from two
numbers) is refused. These calls are found on the tokens of the text (comments, strings, quoted
names and dollar quotes told apart), so a comment or quotes do not hide one.
"""

from __future__ import annotations

import re

from storage.sql_check import HIDDEN_TABLES, MAX_BUILT_CHARS
from tuneloop.errors import Forbidden

# signalling or ending sessions (other replicas' connections share the store's role)
_SIGNALS = ("pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
            "pg_rotate_logfile", "pg_log_backend_memory_contexts")
# the advisory locks the store's writes and migrations take (held for a query's whole run
# they would pause every replica's writes); any prefix: pg_advisory_lock, pg_try_advisory_...
_LOCKS = r"pg_(?:try_)?advisory_\w*"
# functions that run SQL given as text (a way around any name check)
_DYNAMIC = ("query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
            "cursor_to_xml", "cursor_to_xmlschema", "ts_stat", "ts_rewrite", r"dblink\w*",
            r"table_to_xml\w*", r"schema_to_xml\w*", r"database_to_xml\w*")
# replication slots and origins (a slot survives the rollback and holds WAL for good), WAL
# switches, backups, recovery control
_REPLICATION = (r"pg_(?:create|drop|copy)_\w*slot", r"pg_replication_slot_\w+",
                r"pg_logical_\w+", r"pg_replication_origin_\w+", r"pg_switch_\w+",
                r"pg_create_restore_point", r"pg_(?:start_|stop_)?backup\w*",
                r"pg_wal_replay_\w+", "pg_promote", "pg_import_system_collations")
# settings: `work_mem` raised for the query would let a sort or hash hold that much memory
# (the role's own setting, deploy/postgres-init.sh, and SHOW-like `current_setting` stay)
_SETTINGS = ("set_config",)
# the server's files, large objects (lo_import/lo_export read and write them), statistics
_SERVER = (r"pg_read_\w*file", r"pg_ls_\w+", "pg_stat_file", r"pg_file_\w+", "pg_logdir_ls",
           "pg_current_logfile", r"pg_stat_\w*reset\w*", r"lo_\w+", "loread", "lowrite")
# catalogs with secrets (password hashes, foreign servers' passwords, server config)
_SECRETS = ("pg_authid", "pg_shadow", "pg_user_mappings?", "pg_hba_file_rules",
            "pg_ident_file_mappings", "pg_file_settings", "pg_largeobject",
            # the planner's samples of every column (a hidden table's values among them)
            r"pg_stats\w*", r"pg_statistic\w*")
_REFUSED = re.compile(r"(?<![\w$])\"?(" + "|".join((*_SIGNALS, *_DYNAMIC, _LOCKS, *_REPLICATION,
                                                     *_SETTINGS, *_SERVER, *_SECRETS,
                                                     *HIDDEN_TABLES))
                      + r")\"?(?![\w$])", re.IGNORECASE)
_UNICODE_ESCAPE = re.compile(r"\bU&['\"]", re.IGNORECASE)


def check_pg_query(sql: str) -> None:
    """Forbidden (403 `read_only`) when the query names a refused function."""
    found = _REFUSED.search(sql)
    if found is not None:
        raise Forbidden(f"{found.group(1).lower()} is not allowed in a read-only query (it "
                        "signals sessions, takes the store's locks, runs SQL built from text, "
                        "changes a setting, reaches the server's files, WAL or replication, "
                        "or reads secrets or a hidden table)",
                        code="read_only")
    if _UNICODE_ESCAPE.search(sql):
        raise Forbidden("Unicode-escaped names and strings (U&'...') are not allowed in a "
                        "read-only query", code="read_only")
    _check_builders(_tokens(sql))


# a token: (kind, text); kinds: "string" (its value), "name" (lower case), "number", "punct"
Token = tuple[str, str]
_LEXEME = re.compile(r"""
    (?P<space>\s+|--[^\n]*)
  | (?P<block>/\*)
  | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<dollar>\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$)
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<name>[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<punct>::|.)
""", re.VERBOSE | re.DOTALL)


def _tokens(sql: str) -> list[Token]:
    """The query's tokens as Postgres's lexer splits them, without comments and spaces."""
    tokens: list[Token] = []
    at = 0
    while at < len(sql):
        found = _LEXEME.match(sql, at)
        if found is None:  # pragma: no cover - `.` with DOTALL matches any character
            break
        kind, text = found.lastgroup or "punct", found.group()
        at = found.end()
        if kind == "block":  # /* ... */ nests in Postgres
            depth = 1
            while depth and at < len(sql):
                if sql.startswith("/*", at):
                    depth, at = depth + 1, at + 2
                elif sql.startswith("*/", at):
                    depth, at = depth - 1, at + 2
                else:
                    at += 1
        elif kind == "dollar":
            end = sql.find(text, at)
            end = len(sql) if end < 0 else end
            tokens.append(("string", sql[at:end]))
            at = end + len(text)
        elif kind in ("string", "estring"):
            tokens.append(("string", text[text.index("'") + 1:-1]))
        elif kind == "quoted":
            tokens.append(("name", text[1:-1].replace('""', '"').lower()))
        elif kind in ("name", "number", "punct"):
            tokens.append((kind, text.lower() if kind == "name" else text))
    return tokens


BUILDERS = frozenset({"repeat", "lpad", "rpad", "format", "array_fill"})
# a conversion of format(): %[position$][flags][width]type, width a number or * (an argument)
_FORMAT_SPEC = re.compile(r"%(?:\d+\$)?-?(\*(?:\d+\$)?|\d+)?[sIL%]")


def _check_builders(tokens: list[Token]) -> None:
    for at, (kind, text) in enumerate(tokens):
        if kind == "name" and text in BUILDERS and tokens[at + 1:at + 2] == [("punct", "(")]:
            _check_builder(text, _arguments(tokens, at + 2))


def _arguments(tokens: list[Token], start: int) -> list[list[Token]]:
    """The comma-separated arguments of the call whose `(` is just before `start`."""
    arguments: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[start:]:
        if token[0] == "punct" and token[1] in "([":
            depth += 1
        elif token[0] == "punct" and token[1] in ")]":
            if depth == 0:
                break
            depth -= 1
        elif token == ("punct", ",") and depth == 0:
            arguments.append([])
            continue
        arguments[-1].append(token)
    return arguments


def _constant_string(argument: list[Token]) -> str | None:
    """A string literal, perhaps cast (`'-'::text`); None for anything else. An escape
    string's text is counted as written, at least as long as its value."""
    if argument and argument[0][0] == "string" and (
            len(argument) == 1 or (len(argument) == 3 and argument[1] == ("punct", "::")
                                   and argument[2][0] == "name")):
        return argument[0][1]
    return None


def _constant_count(argument: list[Token]) -> int | None:
    if argument[:1] == [("punct", "+")]:
        argument = argument[1:]
    if len(argument) == 1 and argument[0][0] == "number" and argument[0][1].isdigit():
        return int(argument[0][1])
    return None


def _check_builder(name: str, arguments: list[list[Token]]) -> None:
    if name == "array_fill":
        raise _too_big("array_fill() (an array of any size from two numbers)")
    if name == "format":
        pattern = _constant_string(arguments[0])
        widths = [] if pattern is None else _FORMAT_SPEC.findall(pattern)
        if pattern is None or any(w.startswith("*") or int(w or 0) > MAX_BUILT_CHARS
                                  for w in widths):
            raise _too_big(f"format() other than with a constant pattern and widths up to "
                           f"{MAX_BUILT_CHARS}")
        return
    count = _constant_count(arguments[1]) if len(arguments) > 1 else None
    if name == "repeat":
        text = _constant_string(arguments[0])
        if text is None or count is None or len(text) * count > MAX_BUILT_CHARS:
            raise _too_big(f"repeat() other than of a constant string a constant number of "
                           f"times, up to {MAX_BUILT_CHARS} characters")
    elif count is None or count > MAX_BUILT_CHARS:
        raise _too_big(f"{name}() other than to a constant width up to {MAX_BUILT_CHARS}")


def _too_big(what: str) -> Forbidden:
    return Forbidden(f"{what} is not allowed in a read-only query: one call could build a "
                     "value of up to 1 GB on the database server", code="read_only")
