"""Which interactions can become training examples: those with a final answer.

An interaction is trainable when its current message list (the reviewer's edit, or else the
logged one, see `storage.messages`) ends with an assistant answer that has content or tool
calls. Without an edit, a failed or cut exchange never is: an upstream error (status >= 400),
a stream the client left or the upstream cut, a timeout. Embeddings have no message list.

`untrainable_reason` is the rule (Python, used by review actions and the exporter). For the
queue, the logged rows that fail it are listed once, at ingest, in the small `untrainable`
table (migration 32; `mark_untrainable` runs the rule as SQL over each inserted batch, reading
the answer with DuckDB's JSON functions: choice 0 of chat and legacy completions, any output
item of a response), so the queue filter and its counts are anti-joins on a table of a few
percent of the rows instead of JSON parsing of every row. `trainable_sql` combines it with the
reviewers' edits (an edit with an answer makes any item trainable; one without, none). The two
agree on every shape tests/test_review_trainable.py tries; where they could differ (a content
list of empty text parts; a response whose output holds no message), the queue shows an item
that approval then refuses with the reason, never the other way round.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from storage.backend.dialect import DuckDialect, Path, dialect_of, table_exists
from storage.db import Connection
from storage.messages import (
    REVIEWABLE_ENDPOINTS,
    Message,
    content_text,
    is_reviewable,
    messages_of,
)

UNFINISHED = ("client_disconnected", "upstream_cut", "timeout", "upstream_error")

REASONS = {
    "not_reviewable": "embeddings have no message list to train on",
    "upstream_error": "the upstream answered with an error, so there is no answer to train on",
    "client_disconnected": "the client left before the answer was complete",
    "upstream_cut": "the upstream cut the stream before the answer was complete",
    "timeout": "the upstream timed out before the answer was complete",
    "no_answer": "the answer is empty",
}
HOW_TO_FIX = "edit the item to supply the assistant's answer (action edit), or reject it"


def has_final_answer(messages: list[Message] | None) -> bool:
    """The list ends with an assistant message with text, parts or tool/function calls."""
    if not messages:
        return False
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return False
    if last.get("tool_calls") or last.get("function_call"):
        return True
    content = last.get("content")
    if isinstance(content, list):
        return any(isinstance(p, dict) and (p.get("type") != "text" or p.get("text"))
                   for p in content)
    return bool(content_text(content).strip())


def untrainable_reason(endpoint: str | None, status_code: int | None, finish: str | None,
                       request: Any, response: Any,
                       edited: list[Message] | None = None,
                       logged: list[Message] | None = None) -> str | None:
    """None when trainable, else one key of REASONS. `edited` is the reviewer's current
    message list (None: the logged one); `logged` the logged one when already derived."""
    if not is_reviewable(endpoint):
        return "not_reviewable"
    if edited is not None:
        return None if has_final_answer(edited) else "no_answer"
    if status_code is not None and status_code >= 400:
        return "upstream_error"
    if finish in UNFINISHED:
        return "upstream_error" if finish == "upstream_error" else finish
    if logged is None:
        assert endpoint is not None
        logged, _alternatives = messages_of(endpoint, request, response)
    return None if has_final_answer(logged) else "no_answer"


def explain(reason: str) -> str:
    """The whole sentence a reviewer reads: why, and what to do."""
    return f"this item can't be approved: {REASONS.get(reason, reason)}; {HOW_TO_FIX}"


# the logged answer's parts: chat content, tool calls and function call of choice 0, legacy
# completion text of choice 0, a response's output items
_ANSWER_PATHS: tuple[Path, ...] = (
    ("choices", 0, "message", "content"), ("choices", 0, "message", "tool_calls"),
    ("choices", 0, "message", "function_call"), ("choices", 0, "text"), ("output",),
)


def _text(d: DuckDialect, value: str) -> str:
    """A JSON string with a non-whitespace character, or a non-empty array of parts."""
    non_blank = d.matches(d.json_string_value(value), r"[^\s]")
    return f"({d.json_is_string(value)} AND {non_blank} OR {d.json_length(value)} > 0)"


def _logged_answer_sql(d: DuckDialect, alias: str, parts: tuple[str, ...]) -> str:
    """`parts`: the SQL expressions of the row's _ANSWER_PATHS values."""
    chat = (f"({_text(d, parts[0])} OR {d.json_length(parts[1])} > 0 "
            f"OR {d.json_is_object(parts[2])})")
    return (f"(CASE {alias}.endpoint WHEN 'chat.completions' THEN {chat} "
            f"WHEN 'completions' THEN {_text(d, parts[3])} "
            f"WHEN 'responses' THEN {d.json_length(parts[4])} > 0 ELSE FALSE END)")


def logged_trainable_sql(d: DuckDialect, alias: str, parts: tuple[str, ...]) -> str:
    """The rule on the logged row alone (no edit), as a SQL condition."""
    unfinished = ", ".join(f"'{f}'" for f in UNFINISHED)
    return (f"(coalesce({alias}.status_code, 0) < 400 "
            f"AND coalesce({alias}.finish, '') NOT IN ({unfinished}) "
            f"AND coalesce({_logged_answer_sql(d, alias, parts)}, FALSE))")


def mark_untrainable(con: Connection, source: str) -> None:
    """List the reviewable rows of `source` (a table or registered batch of interaction rows)
    that have no final answer as logged. Idempotent (a replayed batch adds nothing). A file
    not yet migrated to 32 has no list: the migration's backfill writes it."""
    if not table_exists(con, "untrainable"):
        return
    d = dialect_of(con)
    unfinished = ", ".join(f"'{f}'" for f in UNFINISHED if f != "upstream_error")
    reviewable = ", ".join(f"'{e}'" for e in REVIEWABLE_ENDPOINTS)
    parts = ", ".join(f"{d.json_at('response', path)} AS p{n}"
                      for n, path in enumerate(_ANSWER_PATHS))
    names = tuple(f"i.p{n}" for n in range(len(_ANSWER_PATHS)))
    readable = ""
    if d.unescapes_nul_badly:
        readable = f"AND NOT {d.has_escaped_nul('response')}"
        _mark_escaped_nul_rows(con, source, reviewable)
    con.execute(
        f"INSERT INTO untrainable (interaction_id, reason) SELECT i.id, CASE "
        f"WHEN coalesce(i.status_code, 0) >= 400 OR i.finish = 'upstream_error' "
        f"THEN 'upstream_error' WHEN i.finish IN ({unfinished}) THEN i.finish "
        f"ELSE 'no_answer' END FROM (SELECT id, endpoint, status_code, finish, {parts} "
        f"FROM {source} WHERE endpoint IN ({reviewable}) {readable}) i "
        f"WHERE NOT {logged_trainable_sql(d, 'i', names)} ON CONFLICT DO NOTHING")


_NON_BLANK = re.compile(r"[^\s]")


def _json_text(value: Any) -> bool:
    """`_text` of the SQL rule: a string with a non-whitespace character, or a non-empty
    array of parts."""
    if isinstance(value, str):
        return _NON_BLANK.search(value) is not None
    return isinstance(value, list) and len(value) > 0


def _first_choice(parsed: Any) -> Any:
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    return choices[0] if isinstance(choices, list) and choices else None


def logged_answer(endpoint: str | None, response: str | None) -> bool:
    """`_logged_answer_sql` in Python, on the response's JSON text."""
    try:
        parsed = orjson.loads(response) if response is not None else None
    except orjson.JSONDecodeError:
        return False
    if endpoint == "chat.completions":
        choice = _first_choice(parsed)
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return False
        tool_calls = message.get("tool_calls")
        return (_json_text(message.get("content"))
                or (isinstance(tool_calls, list) and len(tool_calls) > 0)
                or isinstance(message.get("function_call"), dict))
    if endpoint == "completions":
        choice = _first_choice(parsed)
        return isinstance(choice, dict) and _json_text(choice.get("text"))
    if endpoint == "responses":
        output = parsed.get("output") if isinstance(parsed, dict) else None
        return isinstance(output, list) and len(output) > 0
    return False


def logged_untrainable(batch: pa.Table) -> tuple[list[str], list[str]]:
    """The rule of `mark_untrainable` on a batch before it is inserted (no JSON read back in
    SQL: at ingest that was a quarter of the insert on Postgres): the ids of the reviewable
    rows without a final answer as logged, and the reason of each."""
    reviewable = pc.is_in(batch["endpoint"], value_set=pa.array(REVIEWABLE_ENDPOINTS))
    rows = batch.select(["id", "endpoint", "status_code", "finish", "response"]).filter(
        pc.fill_null(reviewable, False))
    ids: list[str] = []
    reasons: list[str] = []
    for id_, endpoint, status_code, finish, response in zip(
            *(column.to_pylist() for column in rows.columns), strict=True):
        if (status_code or 0) >= 400 or finish == "upstream_error":
            reason = "upstream_error"
        elif finish in UNFINISHED:
            reason = finish
        elif logged_answer(endpoint, response):
            continue
        else:
            reason = "no_answer"
        ids.append(id_)
        reasons.append(reason)
    return ids, reasons


def mark_untrainable_batch(con: Connection, ids: list[str], reasons: list[str]) -> None:
    """`mark_untrainable` for rows just inserted, with what `logged_untrainable` found."""
    if ids and table_exists(con, "untrainable"):
        con.execute("INSERT INTO untrainable (interaction_id, reason) SELECT unnest(?::VARCHAR[]), "
                    "unnest(?::VARCHAR[]) ON CONFLICT DO NOTHING", [ids, reasons])


def _mark_escaped_nul_rows(con: Connection, source: str, reviewable: str) -> None:
    """Postgres can't turn a JSON string holding `\\u0000` into text, so the rule's SQL
    can't read such an answer: these (rare) rows take the rule in Python."""
    d = dialect_of(con)
    rows = con.execute(
        f"SELECT id, endpoint, status_code, finish, request::text, response::text "
        f"FROM {source} WHERE endpoint IN ({reviewable}) "
        f"AND {d.has_escaped_nul('response')}").fetchall()
    for id_, endpoint, status_code, finish, request, response in rows:
        try:
            reason = untrainable_reason(endpoint, status_code, finish,
                                        orjson.loads(request) if request else None,
                                        orjson.loads(response) if response else None)
        except orjson.JSONDecodeError:
            reason = "no_answer"
        if reason is not None:
            con.execute("INSERT INTO untrainable (interaction_id, reason) VALUES (?, ?) "
                        "ON CONFLICT DO NOTHING", [id_, reason])


def edited_answer_sql(d: DuckDialect, messages: str) -> str:
    """`has_final_answer` as SQL, on a JSON message list (a reviewer's edit) `messages`."""
    last = (-1,)
    content = d.json_at(messages, (*last, "content"))
    return (f"({d.json_text_at(messages, (*last, 'role'))} = 'assistant' AND "
            f"({d.json_is_string(content)} AND "
            f"nullif(trim({d.json_string_value(content)}), '') IS NOT NULL "
            f"OR {d.json_length(d.json_at(messages, (*last, 'tool_calls')))} > 0 "
            f"OR {d.json_at(messages, (*last, 'function_call'))} IS NOT NULL "
            f"OR {d.json_length(content)} > 0))")


def trainable_sql(d: DuckDialect, alias: str, within: str) -> str:
    """The rule as a SQL condition on interactions aliased `alias`; `within` bounds the
    subqueries (see `storage.lookup.bounded`; its parameters come three times: the
    edited-with-answer subquery's, the edited-at-all one's, the untrainable one's)."""
    edited = f"SELECT interaction_id FROM reviews WHERE messages IS NOT NULL AND {within}"
    answered = f"{edited} AND {edited_answer_sql(d, 'messages')}"
    logged = f"SELECT interaction_id FROM untrainable WHERE {within}"
    return (f"({alias}.id IN ({answered}) OR ({alias}.id NOT IN ({edited}) "
            f"AND {alias}.id NOT IN ({logged})))")
