"""Per-request cost of stripping a frozen prompt template (tuneloop/prompt_template.py), as the
proxy pays it: a ~4k-token chat prompt (a ~3k-token system prompt, four few-shot turns, a user
message with a fixed prefix and suffix) and a ~4k-token legacy prompt. Prints microseconds per
call (median of runs) and the tokens counted with tiktoken. Then the time template discovery
(tuneloop/prompt_discovery.py) takes over 2,000 such requests, 90% of them with the template.

    PYTHONPATH=$PWD /work/venv/bin/python bench/prompt_template.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tuneloop.prompt_discovery import Sample, discover, token_counter
from tuneloop.prompt_template import PromptTemplate, strip_messages, strip_prompt
from tuneloop.tokenizers import load_encoding

RULE = (
    "Rule {i}: when the customer asks about an order, look up its status, quote the carrier "
    "and tracking number, and never promise a refund without a ticket. "
)
SYSTEM = "".join(RULE.format(i=i) for i in range(110))
FEW_SHOT = tuple(
    {"role": role, "content": f"Example {i} {role} turn: " + "details of the case " * 20}
    for i in range(2)
    for role in ("user", "assistant")
)
PREFIX, SUFFIX = "Customer message follows.\n---\n", "\n---\nAnswer in two sentences."
QUESTION = "My parcel was due Tuesday and the tracking page has not changed since. " * 8


def timed(fn: Callable[[], object], calls: int = 2000, runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    chat = PromptTemplate(
        name="support-bot",
        version=1,
        system_prompt=SYSTEM,
        few_shot=FEW_SHOT,
        user_prefix=PREFIX,
        user_suffix=SUFFIX,
    )
    messages = [
        {"role": "system", "content": SYSTEM},
        *[dict(t) for t in FEW_SHOT],
        {"role": "user", "content": PREFIX + QUESTION + SUFFIX},
    ]
    legacy = PromptTemplate(name="qa", version=1, prompt_prefix=SYSTEM, prompt_suffix=SUFFIX)
    prompt = SYSTEM + QUESTION + SUFFIX
    enc = load_encoding("o200k_base")
    chat_tokens = sum(len(enc.encode(str(m["content"]))) for m in messages)
    print(
        f"chat prompt: {chat_tokens} tokens, {sum(len(str(m['content'])) for m in messages)} chars"
    )
    print(f"  strip_messages: {timed(lambda: strip_messages(chat, messages)):.2f} µs/call")
    print(
        "  strip_messages + replacement system prompt: "
        f"{timed(lambda: strip_messages(chat, messages, system_prompt='Acme.')):.2f} µs/call"
    )
    print(f"legacy prompt: {len(enc.encode(prompt))} tokens, {len(prompt)} chars")
    print(f"  strip_prompt: {timed(lambda: strip_prompt(legacy, prompt)):.2f} µs/call")
    samples = [
        Sample(
            messages=[
                *messages[:-1],
                {"role": "user", "content": f"{PREFIX}q {i} {QUESTION}{SUFFIX}"},
            ]
            if i % 10
            else [{"role": "system", "content": f"other {i}"}, {"role": "user", "content": "x"}]
        )
        for i in range(2000)
    ]
    count = token_counter("gpt-4o-mini")
    start = time.perf_counter()
    found = discover(samples, count)
    best = found["candidates"][0]
    print(
        f"discover over {len(samples)} chat requests: {time.perf_counter() - start:.3f} s "
        f"(candidate 1: share {best['share']}, {best['tokens']} tokens)"
    )


if __name__ == "__main__":
    main()
