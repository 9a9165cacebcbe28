"""The examples a dataset takes: interactions chosen by a review filter, each as the latest
revision's message list, paged newest first so any number of them streams in bounded memory.

Each example is a JSON object with the fields of the exporter's `Example`:

- `messages`: the latest revision's message list (the reviewer's edit, else the logged list);
- `original`: the assistant answer as logged, when a reviewer changed the message list (the
  non-preferred side of a preference pair), else null;
- `revision` and `revision_id` (`<interaction id>:<revision>`, the key of its
  `review_revisions` row; null for a never-reviewed item);
- `tools` and `parallel_tool_calls` from the request (Responses API function tools are written
  in the chat shape), `session_id`;
- `label` for classification: the one effective tag starting with `label_prefix` (default
  `label:`; `label:positive` gives `positive`), or, with `label_field`, that key of the
  request's `metadata`. Several label tags on one interaction give no label and a
  `label_conflict` list naming them;
- `untrainable`: why the example has no final answer (see `storage.trainable`: an upstream
  error, a cut stream, an empty answer; e.g. approved before that rule), else null. The
  exporter skips such examples with a warning.

Selection reuses the review list's query (`storage.queue`): same filters, same drivers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from storage.backend.dialect import dialect_of
from storage.backend.pg_connection import PgConnection
from storage.db import Connection
from storage.lookup import ids_condition
from storage.messages import Message, messages_of
from storage.queue import ReviewQuery, find_ids
from storage.tags import effective_tags
from storage.trainable import untrainable_reason

DEFAULT_LABEL_PREFIX = "label:"
PAGE_SIZE = 2000
_NOT_EVALUATION = ("i.traffic NOT IN ('evaluation', 'probe')", ())


@dataclass(frozen=True)
class ExampleSelection:
    query: ReviewQuery
    label_prefix: str = DEFAULT_LABEL_PREFIX
    label_field: str | None = None
    max_examples: int | None = None


def without_evaluation_traffic(query: ReviewQuery) -> ReviewQuery:
    """Evaluation traffic (the candidate's test runs) and an open canary's background second
    opinions (`probe`: nobody's answer, proxy/background_opinion.py) are kept out unless
    asked for."""
    if query.base.traffic is not None:
        return query
    base = dataclasses.replace(query.base, extra_sql=(*query.base.extra_sql, _NOT_EVALUATION))
    return dataclasses.replace(query, base=base)


def chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Request tools in the chat-completions shape (Responses API function tools are flat)."""
    if not isinstance(tools, list) or not tools:
        return None
    out: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function" and "function" not in tool and "name" in tool:
            function = {k: v for k, v in tool.items() if k != "type"}
            out.append({"type": "function", "function": function})
        else:
            out.append(tool)
    return out or None


def _label(selection: ExampleSelection, tags: Sequence[str],
           metadata: Any) -> tuple[str | None, list[str] | None]:
    if selection.label_field is not None:
        value = metadata.get(selection.label_field) if isinstance(metadata, dict) else None
        if isinstance(value, bool):
            return ("true" if value else "false"), None
        if isinstance(value, str | int | float):
            return str(value), None
        return None, None
    prefix = selection.label_prefix
    labels = sorted({t[len(prefix):] for t in tags
                     if t.startswith(prefix) and len(t) > len(prefix)})
    if len(labels) > 1:
        return None, labels
    return (labels[0] if labels else None), None


def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _example(selection: ExampleSelection, row: tuple[Any, ...],
             review: tuple[int, str | None] | None, tags: Sequence[str]) -> dict[str, Any]:
    interaction_id, endpoint, request, response, session_id, metadata, status, finish = row
    request, response = _loads(request), _loads(response)
    logged, _alternatives = messages_of(endpoint, request, response)
    revision, edited = review if review is not None else (0, None)
    messages: list[Message] = orjson.loads(edited) if edited is not None else logged
    untrainable = untrainable_reason(endpoint, status, finish, request, response,
                                     messages if edited is not None else None, logged)
    original = logged[-1] if edited is not None and logged and \
        logged[-1].get("role") == "assistant" else None
    request = request if isinstance(request, dict) else {}
    label, conflict = _label(selection, tags, _loads(metadata))
    parallel = request.get("parallel_tool_calls")
    example: dict[str, Any] = {
        "interaction_id": interaction_id,
        "messages": messages,
        "tools": chat_tools(request.get("tools")),
        "revision_id": f"{interaction_id}:{revision}" if revision else None,
        "revision": revision,
        "original": original,
        "session_id": session_id,
        "label": label,
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else None,
        "untrainable": untrainable,
        "endpoint": endpoint,
    }
    if conflict is not None:
        example["label_conflict"] = conflict
    return example


def examples_for(con: Connection, selection: ExampleSelection,
                 ids: Sequence[str]) -> list[dict[str, Any]]:
    """The examples of the given interactions, in the order given."""
    if not ids:
        return []
    where, params = ids_condition("id", ids)
    rows = {r[0]: r for r in con.execute(
        "SELECT id, endpoint, request, response, session_id, metadata, status_code, finish, "
        f"tags FROM interactions WHERE {where}", params).fetchall()}
    where, params = ids_condition("interaction_id", ids)
    reviews: Mapping[str, tuple[int, str | None]] = {
        r[0]: (r[1], r[2]) for r in con.execute(
            f"SELECT interaction_id, revision, messages FROM reviews WHERE {where}",
            params).fetchall()
    }
    tags = effective_tags(con, {i: rows[i][8] for i in ids if i in rows})
    return [_example(selection, rows[i][:8], reviews.get(i), tags[i]) for i in ids if i in rows]


def example_page(con: Connection, selection: ExampleSelection, *, cursor: str | None = None,
                 size: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], str | None]:
    """One page of examples, newest first, and the cursor of the next page (None: done).
    Each page is its own query (the review list's windows): right for text search (`q`),
    whose term index drives it; :class:`ExampleStream` is faster for everything else."""
    ids, next_cursor = find_ids(con, selection.query, limit=size, cursor=cursor)
    return examples_for(con, selection, ids), next_cursor


class ExampleStream:
    """Every example of a selection, newest first, a page at a time, in one pass.

    One query applies every filter (except `q`) to the interactions and sorts the matching
    ids; its result stays open on `driver` (a cursor of its own, used by one thread at a
    time) and hands out one page of ids per call, whose rows are then fetched by id on the
    caller's cursor. The ids wait in DuckDB's buffers, never as Python objects; each page is
    read from the snapshot the query started on."""

    def __init__(self, driver: Connection, selection: ExampleSelection,
                 page_size: int = PAGE_SIZE):
        if selection.query.q is not None:
            raise ValueError("text search pages with example_page (its term index drives it)")
        self.selection = selection
        where, params = selection.query.where(d=dialect_of(driver))
        sql = f"SELECT i.id FROM interactions i WHERE {where} ORDER BY i.id DESC"
        self._pages: Iterator[list[str]]
        if isinstance(driver, PgConnection):
            self._pages = driver.stream_column(sql, params, page_size)
        else:
            reader = driver.sql(sql, params=params).to_arrow_reader(page_size)
            self._pages = (batch.column(0).to_pylist() for batch in reader)

    def next_page(self, con: Connection) -> list[dict[str, Any]] | None:
        """The next page of examples (None: the selection is exhausted)."""
        ids = next(self._pages, None)
        if ids is None:
            return None
        return examples_for(con, self.selection, ids)


def encode_examples(examples: Sequence[Mapping[str, Any]]) -> bytes:
    """Newline-delimited JSON, one example a line."""
    return b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in examples)
