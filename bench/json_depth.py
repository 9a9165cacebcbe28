"""What the JSON depth check (`proxy.body.within_depth`) costs beside orjson's parse of the same
body: a typical 4 KB chat request, the same with a tool schema (over 64 brackets: the full
check), and a 1 MB request. Prints microseconds per call. Run from the repository root:

    python bench/json_depth.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.body import within_depth


def per_call_us(call: object, body: bytes, rounds: int) -> float:
    assert callable(call)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            call(body)
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


def bodies() -> dict[str, bytes]:
    turn = [{"role": "user", "content": "Where is my order? " * 20},
            {"role": "assistant", "content": "It left the warehouse on Monday. " * 20}]
    typical = {"model": "gpt-4o-mini", "messages": turn * 3, "temperature": 0.2,
               "metadata": {"app": "support"}}
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "array", "items": {
        "type": "object", "properties": {"value": {"type": "string"}}}} for i in range(30)}}
    with_tools = {**typical, "tools": [{"type": "function", "function": {
        "name": "lookup", "description": "Look an order up.", "parameters": schema}}]}
    big = {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": [{"type": "text", "text": 'a "quoted" [text] {x} ' * 4}]}
        for _ in range(8000)]}
    return {"4 KB chat": orjson.dumps(typical), "4 KB chat + tools": orjson.dumps(with_tools),
            "1 MB chat": orjson.dumps(big)}


def main() -> None:
    print(f"{'body':<20}{'bytes':>10}{'depth check µs':>16}{'orjson.loads µs':>17}")
    for name, body in bodies().items():
        rounds = 2000 if len(body) < 100_000 else 20
        check = per_call_us(lambda b: within_depth(b, 64), body, rounds)
        parse = per_call_us(orjson.loads, body, rounds)
        print(f"{name:<20}{len(body):>10}{check:>16.1f}{parse:>17.1f}")


if __name__ == "__main__":
    main()
