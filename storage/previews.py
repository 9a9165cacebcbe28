"""Bounded previews of logged interactions, for the review list and for an item too big to
answer whole.

The database cuts: each JSON column (request, response, sent_request) is read as at most
`field_chars` characters of its text, with its full length beside it, so this process never
holds a whole body (a key holder may log 30 MB ones). A cut prefix is closed into valid JSON
(`close_prefix`: the values it holds completely, the last one cut), then every string inside is
cut to `text_chars` characters ending in `CUT_MARK`. The item says what was cut: `truncated`,
`truncated_fields` and `stored_chars` (each column's full length).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from storage.backend.dialect import PgDialect, dialect_of
from storage.db import Connection
from storage.interactions import row_to_item
from storage.lookup import ids_condition
from storage.records import COLUMNS

CUT_MARK = "…"
_HIGH_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}")
BODY_COLUMNS = ("request", "response", "sent_request")


@dataclass(frozen=True)
class PreviewLimits:
    field_chars: int = 16_384
    """Each JSON column is read as at most this many characters of its text."""
    text_chars: int = 2_000
    """Each string inside it (a message's content, ...) is cut to this many characters."""


DEFAULT_LIMITS = PreviewLimits()


def stored_chars(con: Connection, ids: list[str]) -> dict[str, dict[str, int]]:
    """Each row's JSON columns' lengths in characters (the database reads them; we don't)."""
    where, params = ids_condition("id", ids)
    lengths = ", ".join(f"length(CAST({c} AS VARCHAR))" for c in BODY_COLUMNS)
    rows = con.execute(f"SELECT id, {lengths} FROM interactions WHERE {where}",
                       params).fetchall()
    return {row[0]: {c: int(n or 0) for c, n in zip(BODY_COLUMNS, row[1:], strict=True)}
            for row in rows}


# DuckDB runs in this process, and a query over several rows' bodies (an IN list) reads and
# caches those of every row it scans: 20 rows of 25 MB took the server from 70 to 520-900 MB
# in groups of 8 as in one query; a point lookup (`id = ?`) reads one row's, 190 MB for the
# page (bench/list_previews.py). It costs about 1 ms a row (pages of small rows: 50 rows
# 15 -> 64 ms, 200 rows 22 -> 233 ms). Postgres cuts in its own process: one query a page.
def preview_rows(con: Connection, ids: list[str], limits: PreviewLimits
                 ) -> list[dict[str, Any]]:
    """The rows of `ids`, newest first, with their JSON columns cut (see the module doc).
    The other columns in one query; the cut bodies on DuckDB one row a query."""
    plain = [c for c in COLUMNS if c not in BODY_COLUMNS]
    where, params = ids_condition("id", ids)
    rows = con.execute(f"SELECT {', '.join(plain)} FROM interactions WHERE {where} "
                       "ORDER BY id DESC", params).fetchall()
    cut = ", ".join(f"substr(CAST({c} AS VARCHAR), 1, ?), length(CAST({c} AS VARCHAR))"
                    for c in BODY_COLUMNS)
    ordered = [row[0] for row in rows]
    if isinstance(dialect_of(con), PgDialect):
        where, params = ids_condition("id", ordered)
        queries = [(where, params)]
    else:  # one row a query: a point lookup reads that row's bodies alone
        queries = [("id = ?", [interaction_id]) for interaction_id in ordered]
    bodies: dict[str, tuple[Any, ...]] = {}
    for where, params in queries:
        bodies.update((row[0], row[1:]) for row in con.execute(
            f"SELECT id, {cut} FROM interactions WHERE {where}",
            [*[limits.field_chars] * len(BODY_COLUMNS), *params]).fetchall())
    return [_previewed(plain, row, bodies.get(row[0], (None, 0) * len(BODY_COLUMNS)), limits)
            for row in rows]


def _previewed(plain: list[str], row: tuple[Any, ...], bodies: tuple[Any, ...],
               limits: PreviewLimits) -> dict[str, Any]:
    item = row_to_item(plain, row)
    truncated: list[str] = []
    sizes: dict[str, int] = {}
    for number, column in enumerate(BODY_COLUMNS):
        text, length = bodies[2 * number], int(bodies[2 * number + 1] or 0)
        sizes[column] = length
        item[column], was_cut = _preview(text, length, limits)
        if was_cut:
            truncated.append(column)
    mark(item, truncated, sizes)
    return item


def mark(item: dict[str, Any], truncated: list[str], sizes: dict[str, int]) -> None:
    item["truncated"] = bool(truncated)
    item["truncated_fields"] = truncated
    item["stored_chars"] = sizes


def _preview(text: str | None, length: int, limits: PreviewLimits) -> tuple[Any, bool]:
    if text is None:
        return None, False
    prefix_cut = length > len(text)
    try:
        value = orjson.loads(close_prefix(text) if prefix_cut else text)
    except orjson.JSONDecodeError:
        return None, True
    value, strings_cut = clip_strings(value, limits.text_chars)
    return value, prefix_cut or strings_cut


def clip_strings(value: Any, chars: int) -> tuple[Any, bool]:
    """`value` with every string (keys aside) longer than `chars` cut to `chars` characters
    plus `CUT_MARK`; and whether any was."""
    if isinstance(value, str):
        return (value[:chars] + CUT_MARK, True) if len(value) > chars else (value, False)
    if isinstance(value, list):
        pairs = [clip_strings(v, chars) for v in value]
        return [v for v, _ in pairs], any(c for _, c in pairs)
    if isinstance(value, dict):
        cut_any = False
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out[key], was_cut = clip_strings(inner, chars)
            cut_any = cut_any or was_cut
        return out, cut_any
    return value, False


def close_prefix(text: str) -> str:
    """A prefix of a JSON text made valid JSON: an open string is closed (a half escape
    dropped), a half literal or number, a dangling comma or a key without its value is dropped,
    and open arrays and objects are closed."""
    stack: list[str] = []
    in_string = False
    escaped = False
    escape_at = previous_at = -1  # where the string's last two escape sequences start
    keep = 0  # text[:keep] ends after a complete value, or just inside a container
    string_start = 0
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped, escape_at, previous_at = True, index, escape_at
            elif char == '"':
                in_string = False
                keep = index + 1
            continue
        if char == '"':
            in_string, string_start = True, index
        elif char in "[{":
            stack.append("]" if char == "[" else "}")
            keep = index + 1
        elif char in "]}":
            if stack:
                stack.pop()
            keep = index + 1
        elif char in ",:" or char.isspace():
            continue
        else:  # a literal or a number: complete once the next structural character comes
            keep = index + 1 if index + 1 < len(text) and text[index + 1] in ",]} \n\r\t" \
                else keep
    out = text
    if in_string:
        end = len(text)
        if escaped or (escape_at > string_start and text[escape_at + 1:escape_at + 2] == "u"
                       and end - escape_at < 6):
            end, escape_at = escape_at, previous_at  # a half escape (`\`, `\u12`)
        if escape_at > string_start and end - escape_at == 6 \
                and _HIGH_SURROGATE.fullmatch(text[escape_at:end]):
            end = escape_at  # half of a pair
        out = text[:end] + '"'
    else:
        out = text[:keep]
    out = out.rstrip()
    # a string that is an object's key with no value yet, or a dangling comma or colon
    while True:
        stripped = out.rstrip().rstrip(",").rstrip()
        if stripped.endswith(":"):
            stripped += "null"
        elif stack and stack[-1] == "}" and stripped.endswith('"') and _is_key(stripped):
            stripped += ":null"
        if stripped == out:
            break
        out = stripped
    return (out + "".join(reversed(stack))) or "null"


def _is_key(text: str) -> bool:
    """Whether the string `text` ends with stands where an object's key does (after `{` or
    a comma), found by walking back over the string."""
    index = len(text) - 2
    while index >= 0:
        if text[index] == '"':
            backslashes = 0
            while index - 1 - backslashes >= 0 and text[index - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:
                break
        index -= 1
    before = text[:max(index, 0)].rstrip()
    return before.endswith(("{", ","))
