"""Token counts and cost for streamed answers whose upstream reported no usage.

A chat or legacy completion stream carries usage only when the client asked for it
(`stream_options.include_usage`); without it the row would have no tokens and no cost. Ingest
fills them in with tiktoken (the model's encoding; chat framing as OpenAI's counting recipe has
it; tools and functions as their JSON text; images not counted) and marks the row
`usage_estimated`, so a report can tell an estimate from a bill. It runs at ingest, off the
request path, with the counting in the worker process (`storage.compute_worker`). A cut or
abandoned stream is estimated from what it had sent. The prompt is counted from what the target
received: `sent_request` when a route transform rewrote the request (a stripped template is not
billed), else the app's `request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import tiktoken

from proxy.pricing import PriceMap
from storage.compute_worker import ComputeWorker
from storage.messages import content_text
from tuneloop.tokenizers import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_REPLY_PRIMING,
    encoding_for,
    load_encoding,
)

log = logging.getLogger("tuneloop.usage")

ESTIMATED_ENDPOINTS = ("chat.completions", "completions")
Count = Callable[[str], int]


def _loads(text: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(text) if isinstance(text, str | bytes) else None
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _content_tokens(count: Count, message: dict[str, Any]) -> int:
    """What a message says: its text (text parts of a list), refusal, tool calls."""
    tokens = count(content_text(message.get("content")))
    if isinstance(message.get("refusal"), str):
        tokens += count(message["refusal"])
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tokens += count(str(function.get("name") or ""))
            tokens += count(str(function.get("arguments") or ""))
    return tokens


def chat_prompt_tokens(count: Count, request: dict[str, Any]) -> int:
    total = TOKENS_REPLY_PRIMING
    tools = request.get("tools") or request.get("functions")
    if tools:
        total += count(orjson.dumps(tools).decode())
    messages = request.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE + _content_tokens(count, message)
        for key in ("role", "tool_call_id"):
            if isinstance(message.get(key), str):
                total += count(message[key])
        if isinstance(message.get("name"), str):
            total += count(message["name"]) + TOKENS_PER_NAME
    return total


def legacy_prompt_tokens(count: Count, prompt: Any) -> int:
    """A prompt string, a list of them, or token arrays (their length)."""
    if isinstance(prompt, str):
        return count(prompt)
    if not isinstance(prompt, list):
        return 0
    if all(isinstance(p, int) for p in prompt):
        return len(prompt)
    return sum(legacy_prompt_tokens(count, p) for p in prompt)


def estimate_usage(count: Count, endpoint: str, request: dict[str, Any],
                   response: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens; completion counts every choice (n > 1 is billed so)."""
    raw_choices = response.get("choices")
    choices = [c for c in raw_choices if isinstance(c, dict)] \
        if isinstance(raw_choices, list) else []
    if endpoint == "chat.completions":
        completion = sum(_content_tokens(count, c["message"]) for c in choices
                         if isinstance(c.get("message"), dict))
        return chat_prompt_tokens(count, request), completion
    completion = sum(count(c["text"]) for c in choices if isinstance(c.get("text"), str))
    return legacy_prompt_tokens(count, request.get("prompt")), completion


def _counter(encoding: tiktoken.Encoding) -> Count:
    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text)) if text else 0

    return count


def billed_request(row: dict[str, Any]) -> dict[str, Any]:
    """What the target was sent: the transformed request if there was one, else the app's."""
    sent = row.get("sent_request")
    return _loads(sent) if sent is not None else _loads(row["request"])


def estimate_rows(rows: list[dict[str, Any]]) -> list[tuple[int, int] | None]:
    """Estimates for rows (endpoint, model, upstream_model, request, sent_request, response):
    pure, so the worker process runs it; None where the model's tokenizer can't be loaded."""
    counters: dict[str, Count | None] = {}
    out: list[tuple[int, int] | None] = []
    for row in rows:
        name = encoding_for(row["upstream_model"] or row["model"] or "")
        if name not in counters:
            try:
                counters[name] = _counter(load_encoding(name))
            except Exception as exc:  # tiktoken raises ValueError or network errors
                log.error("cannot load the %s tokenizer, stream usage stays unknown: %s",
                          name, exc)
                counters[name] = None
        count = counters[name]
        out.append(None if count is None else estimate_usage(
            count, row["endpoint"], billed_request(row), _loads(row["response"])))
    return out


class UsageEstimator:
    """The writer's prepare step: fills tokens and cost of stream rows that have none. The
    counting runs in the worker process when there is one: loading an encoding would hold the
    GIL for half a second here."""

    def __init__(self, prices: PriceMap, worker: ComputeWorker | None = None):
        self.prices = prices
        self.worker = worker
        self.estimated = 0

    def __call__(self, table: pa.Table) -> pa.Table:
        wanted = pc.and_kleene(
            pc.and_kleene(pc.fill_null(table["stream"], False),
                          pc.is_in(table["endpoint"], pa.array(ESTIMATED_ENDPOINTS))),
            pc.and_kleene(pc.is_null(table["prompt_tokens"]),
                          pc.is_null(table["completion_tokens"])),
        )
        answered = pc.and_kleene(pc.is_valid(table["response"]),
                                 pc.less(table["status_code"], 400))  # errors are not billed
        wanted = pc.fill_null(pc.and_kleene(wanted, answered), False)
        if not pc.any(wanted).as_py():
            return table
        indices = pc.indices_nonzero(wanted).to_pylist()
        rows = table.take(indices).select(
            ["endpoint", "model", "upstream_model", "request", "sent_request", "response"]
        ).to_pylist()
        usages = (self.worker.run(estimate_rows, rows) if self.worker is not None
                  else estimate_rows(rows))
        prompt = table["prompt_tokens"].to_pylist()
        completion = table["completion_tokens"].to_pylist()
        cost = table["cost_usd"].to_pylist()
        estimated = table["usage_estimated"].to_pylist()
        for index, row, usage in zip(indices, rows, usages, strict=True):
            if usage is None:
                continue
            prompt[index], completion[index] = usage
            cost[index] = self.prices.cost(row["upstream_model"] or row["model"], *usage)
            estimated[index] = True
            self.estimated += 1
        for name, values in (("prompt_tokens", prompt), ("completion_tokens", completion),
                             ("cost_usd", cost), ("usage_estimated", estimated)):
            position = table.schema.get_field_index(name)
            table = table.set_column(position, table.schema.field(position),
                                     pa.array(values, table.schema.field(position).type))
        return table
