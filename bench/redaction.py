"""Per-record cost of redaction on the request path: `Capture.record` for a typical 4 KB chat
(request and answer of ~2 KB each, with a few e-mails, phone and card numbers), with every
redaction kind on and with redaction off. Prints microseconds per record (median of runs).

    PYTHONPATH=$PWD /work/venv/bin/python bench/redaction.py
"""

from __future__ import annotations

import statistics
import time
import uuid

import orjson

from proxy.capture import Capture
from proxy.headers import ClientMeta
from proxy.pricing import PriceMap
from proxy.redaction import Redactor

PROSE = ("Thanks for reaching out about your order. I checked the account and the invoice from "
         "March looks correct; the second charge was a pre-authorisation that will drop off "
         "within five business days. ")


def chat(with_pii: bool) -> tuple[dict[str, object], dict[str, object]]:
    pii = (" Reach me at jane.doe@example.com or +1 (415) 555-0132, card 4111 1111 1111 1111."
           if with_pii else "")
    question = (PROSE * 9)[:1900] + pii
    answer = (PROSE * 9)[:1900] + (" I wrote to jane.doe@example.com." if with_pii else "")
    request = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful support agent for Acme."},
        {"role": "user", "content": question}], "metadata": {"ticket": "T-1042"}}
    response = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 480, "completion_tokens": 420}}
    return request, response


def per_record_us(redactor: Redactor, with_pii: bool, rounds: int = 2000) -> float:
    request, response = chat(with_pii)
    body = orjson.dumps(request)
    prices = PriceMap.load()
    meta = ClientMeta(tags=("support",), user="user-1042", session="s-77")
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            capture = Capture(str(uuid.uuid4()), "chat/completions", meta, body, request, False)
            capture.record(status_code=200, response=response, finish="completed", error=None,
                           prices=prices, redactor=redactor)
        runs.append((time.perf_counter() - started) / rounds * 1e6)
    return statistics.median(runs)


def main() -> None:
    size = len(orjson.dumps(chat(True)[0])) + len(orjson.dumps(chat(True)[1]))
    print(f"record of a chat: {size} bytes of request + response JSON")
    off = per_record_us(Redactor([]), True)
    print(f"redaction off:              {off:7.1f} µs/record")
    for with_pii in (False, True):
        on = per_record_us(Redactor(["email", "phone", "card"]), with_pii)
        label = "with PII" if with_pii else "no PII  "
        print(f"redaction on, {label}:    {on:7.1f} µs/record (+{on - off:.1f})")


if __name__ == "__main__":
    main()
