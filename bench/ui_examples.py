"""A small DuckDB file of varied interactions for looking at the review app: Markdown with
code and a table, Arabic and Hebrew, a tool call and its JSON result, a long answer, an
upstream error, hostile HTML. Used by `bench/ui_render.py --screenshots`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.db import connect
from storage.migrations import migrate
from storage.records import INTERACTION_SCHEMA, insert_interactions

SYSTEM = "You are the support assistant of Acme Cloud. Answer briefly and accurately."
CODE_ANSWER = """To retry only on **rate limits**, wrap the call:

```python
import time, openai

def ask(client, messages, tries=5):
    for attempt in range(tries):
        try:
            return client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        except openai.RateLimitError:
            time.sleep(2 ** attempt)  # 1, 2, 4, 8 s
    raise RuntimeError("still rate limited")
```

| plan | requests / min | tokens / min |
|------|---------------:|-------------:|
| free | 3 | 40,000 |
| team | 500 | 2,000,000 |

See <https://platform.openai.com/docs/guides/rate-limits>."""
ARABIC_ANSWER = ("يمكنك إلغاء اشتراكك في أي وقت من صفحة **الفوترة**. سيبقى حسابك نشطًا حتى "
                 "نهاية فترة الفوترة الحالية، ولن يتم خصم أي مبلغ بعد ذلك.")
HEBREW_ANSWER = "כן, אפשר לשנות את כתובת האימייל בהגדרות החשבון, תחת \"פרופיל\"."
LONG_ANSWER = "\n\n".join(
    f"{n}. Check the **{part}** settings: open the console, choose the project, and compare "
    "the values with the ones in your deployment manifest; a mismatch there is the most "
    "common cause of intermittent 401 responses after a key rotation."
    for n, part in enumerate(["API key", "organization", "project", "region", "proxy",
                              "firewall", "DNS", "TLS", "clock", "quota", "billing",
                              "webhook"], start=1))
HOSTILE = ('Here you go <img src=x onerror="alert(1)"> <script>alert(2)</script> '
           "[click me](javascript:alert(3)) and **bold**.")


def _chat(prompt: str, answer: str | None, **extra: Any) -> tuple[list[dict[str, Any]],
                                                                     dict[str, Any] | None]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    response = None if answer is None else {
        "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer}}]}
    return messages, response


def _tool_item() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Where is my order 8812?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_7Qe", "type": "function", "function": {
                "name": "lookup_order", "arguments": json.dumps({"order_id": "8812"})}}]},
        {"role": "tool", "tool_call_id": "call_7Qe", "content": json.dumps({
            "order_id": "8812", "status": "shipped", "carrier": "DHL",
            "eta": "2026-12-02", "items": [{"sku": "AC-220", "qty": 2}]})},
    ]
    response = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content":
                            "Order **8812** has shipped with DHL and should arrive on "
                            "2 December."}}]}
    return messages, response


TURNS = [("Hi", "Hello! How can I help?"),
         ("My order is late", "Sorry to hear that. What is the order number?"),
         ("It is 998877, placed last Monday", "Thanks. Order 998877 left our warehouse on "
          "Wednesday; the carrier's estimate is Friday."),
         ("Can I get a refund if it misses Friday?", "Yes: refunds are possible within 30 "
          "days of the order, so you would be covered."),
         ("And the shipping fee?", "The shipping fee is refunded too when a delivery is late."),
         ("Please start the refund now", None)]
CUT_ANSWER = ("To migrate the billing export you first pause the scheduled job, then copy the "
              "last snapshot into the new bucket and")


def _turns(count: int, answer: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A conversation of `count` user turns; the last one answered by `answer`."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for user, reply in TURNS[:count - 1]:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": TURNS[count - 1][0]})
    return messages, {"object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                         "content": answer}}]}


def _cut_item() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """An answer the upstream cut at max_tokens (finish_reason "length")."""
    messages, response = _chat("How do I migrate the billing export?", CUT_ANSWER)
    assert response is not None
    response["choices"][0]["finish_reason"] = "length"
    return messages, response


def examples() -> list[dict[str, Any]]:
    """(fields) of each example interaction, newest last."""
    items: list[dict[str, Any]] = []
    for n in range(44):
        prompt = f"How do I rotate API key #{n} without downtime?"
        answer = (f"Create the new key first, deploy it to every service, then revoke key "
                  f"#{n}. Both keys work during the overlap.")
        items.append({"chat": _chat(prompt, answer), "tags": ["support"] if n % 3 else [],
                      "user": f"user-{100 + n}", "model": "gpt-4o-mini"})
    items += [
        {"chat": _chat("Write a retry loop for rate limits, with the limits per plan.",
                       CODE_ANSWER), "tags": ["support", "code"], "user": "dev-17"},
        {"chat": _chat(HOSTILE, "I can't run scripts, but **bold** is fine."),
         "tags": ["security"], "user": "mallory"},
        {"chat": _chat("Why do I get 401 after rotating keys?", LONG_ANSWER),
         "tags": ["support"], "user": "ops-3"},
        {"chat": _chat("How do I cancel?", None), "status": 502, "finish": "upstream_error",
         "error": "upstream said 502: Bad Gateway (connection reset by peer)", "user": "u-9"},
        {"chat": _tool_item(), "tags": ["orders", "tools"], "user": "customer-8812"},
        {"chat": _chat("האם אפשר לשנות את כתובת האימייל?", HEBREW_ANSWER), "tags": ["he"],
         "user": "customer-he"},
        {"chat": _chat("كيف يمكنني إلغاء اشتراكي؟", ARABIC_ANSWER),
         "tags": ["billing", "ar"], "user": "customer-ar", "session": "s-ar-1",
         "model": "support-bot"},
        {"chat": _cut_item(), "tags": ["billing"], "user": "ops-7"},
        {"chat": _turns(6, "I have started the refund for order 998877: you will get an "
                        "email within the hour, and the money within 5 working days."),
         "tags": ["orders"], "user": "customer-9988", "session": "s-9988"},
        {"chat": _turns(3, "Thanks. Order 998877 left our warehouse on Wednesday; the "
                        "carrier's estimate is Friday."),
         "tags": ["orders"], "user": "customer-9988", "session": "s-9988"},
    ]
    return items


def row(example: dict[str, Any], created: datetime) -> dict[str, Any]:
    messages, response = example["chat"]
    return {
        "id": str(uuid.UUID(int=(int(created.timestamp() * 1000) << 80) | (7 << 76)
                            | (2 << 62) | uuid.uuid4().int & ((1 << 62) - 1))),
        "created_at": created, "endpoint": "chat.completions",
        "model": example.get("model", "gpt-4o-mini"), "upstream_model": "gpt-4o-mini",
        "provider": None, "route": None, "traffic": "production",
        "request": json.dumps({"model": "gpt-4o-mini", "messages": messages}),
        "response": None if response is None else json.dumps(response),
        "status_code": example.get("status", 200), "finish": example.get("finish", "completed"),
        "error": example.get("error"), "latency_ms": 840.0, "ttfb_ms": 120.0,
        "prompt_tokens": 60, "completion_tokens": 40, "cost_usd": 0.0001,
        "stream": False, "tags": example.get("tags", []), "user_id": example.get("user"),
        "session_id": example.get("session"), "metadata": None, "usage_estimated": False,
        "source_id": None,
    }


def seed_examples(path: Path) -> int:
    """Write the examples into a new DuckDB file; returns how many."""
    con = connect(path)
    try:
        migrate(con)
        start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        rows = [row(example, start + timedelta(minutes=7 * n))
                for n, example in enumerate(examples())]
        return insert_interactions(con, pa.Table.from_pylist(rows, schema=INTERACTION_SCHEMA))
    finally:
        con.close()
